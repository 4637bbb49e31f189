package device

import (
	"errors"
	"fmt"
)

// MaxNodeNameLen is the longest name Kubernetes accepts for a Node (a DNS-1123 subdomain).
const MaxNodeNameLen = 253

// maxHostnameLen bounds a device's own name: the agent labels its Node kubernetes.io/hostname=NAME, and a
// label value is at most 63 characters.
const maxHostnameLen = 63

var (
	errNodeNameRequired = errors.New("required")
	errNodeNameTooLong  = errors.New("longer than 253 characters")
	errNodeNameSyntax   = errors.New("want lowercase letters, digits, '-' and '.', each dot-separated part starting and ending with a letter or digit")
)

// ValidateNodeName checks that name is a valid Kubernetes Node name: a DNS-1123 subdomain of at most
// MaxNodeNameLen characters, dot-separated parts of lowercase letters, digits and '-', each starting and
// ending with a letter or digit. Such a name is safe in a URL path unescaped.
//
// It is picogate's one name rule: the board-side agent, the gateway's policy (for any object name in a
// path), the signed-request parser and the device registry all call it, each adding only its own limits.
// It does not allocate, valid or not, since the gateway runs it on every request; its errors name the
// rule, not the name, so callers add the name.
func ValidateNodeName(name string) error {
	if name == "" {
		return errNodeNameRequired
	}
	if len(name) > MaxNodeNameLen {
		return errNodeNameTooLong
	}
	prev := byte('.') // as if after a dot: the first character must start a part
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z' || c >= '0' && c <= '9':
		case c == '-' && prev != '.':
		case c == '.' && prev != '.' && prev != '-':
		default:
			return errNodeNameSyntax
		}
		prev = c
	}
	if prev == '-' || prev == '.' {
		return errNodeNameSyntax
	}
	return nil
}

// validName is the rule for the board's own name: a Node name short enough to be its hostname label.
func validName(name string) error {
	switch err := ValidateNodeName(name); {
	case name == "":
		return err
	case err != nil:
		return fmt.Errorf("%q: %w", name, err)
	case len(name) > maxHostnameLen:
		return fmt.Errorf("%q: longer than %d characters (the name is also the Node's kubernetes.io/hostname label)", name, maxHostnameLen)
	}
	return nil
}
