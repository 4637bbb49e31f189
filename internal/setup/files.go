package setup

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// files are the three paths setup writes, all absolute.
type files struct {
	Kubeconfig, Token, CA string
}

// kubeconfig renders the gateway's kubeconfig: the server, the CA and the token by path (absolute, so
// the file means the same wherever it is read from), and the registry namespace as the context's
// default, so kubectl --kubeconfig FILE shows what the gateway sees.
func kubeconfig(server, serverName string, f files, namespace string) ([]byte, error) {
	const name = "picogate"
	cfg := clientcmdapi.Config{
		Clusters:       map[string]*clientcmdapi.Cluster{name: {Server: server, CertificateAuthority: f.CA, TLSServerName: serverName}},
		AuthInfos:      map[string]*clientcmdapi.AuthInfo{name: {TokenFile: f.Token}},
		Contexts:       map[string]*clientcmdapi.Context{name: {Cluster: name, AuthInfo: name, Namespace: namespace}},
		CurrentContext: name,
	}
	b, err := clientcmd.Write(cfg)
	if err != nil {
		return nil, fmt.Errorf("rendering the kubeconfig: %w", err)
	}
	return b, nil
}

// write replaces the CA, the token and then the kubeconfig, each atomically.
func (f files) write(ca, token, kubeconfig []byte, o owner) error {
	if err := os.MkdirAll(filepath.Dir(f.Kubeconfig), 0o755); err != nil {
		return fmt.Errorf("writing the kubeconfig: %w", err)
	}
	for _, w := range []struct {
		path string
		data []byte
	}{{f.CA, ca}, {f.Token, token}, {f.Kubeconfig, kubeconfig}} {
		if err := writeAtomic(w.path, w.data, o); err != nil {
			return err
		}
	}
	return nil
}

// writeAtomic writes data to a temporary file beside path (mode 0600, owned by o), syncs it and renames
// it over path: a reader, such as client-go re-reading the token, sees the old file or the new one,
// never half of one.
func writeAtomic(path string, data []byte, o owner) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
			err = fmt.Errorf("writing %s: %w", path, err)
		}
	}()
	if err = tmp.Chmod(0o600); err != nil {
		return err
	}
	if o.set {
		if err = tmp.Chown(o.uid, o.gid); err != nil {
			return err
		}
	}
	if _, err = tmp.Write(data); err != nil {
		return err
	}
	if err = tmp.Sync(); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

// owner is a resolved --owner.
type owner struct {
	set      bool
	uid, gid int
}

// parseOwner resolves "user" (its primary group) or "user:group", by name or numeric id.
func parseOwner(s string) (owner, error) {
	if s == "" {
		return owner{}, nil
	}
	uname, gname, hasGroup := strings.Cut(s, ":")
	if uname == "" || (hasGroup && gname == "") {
		return owner{}, fmt.Errorf("--owner %q: want USER or USER:GROUP", s)
	}
	u, err := lookupUser(uname)
	if err != nil {
		return owner{}, fmt.Errorf("--owner %q: %w", s, err)
	}
	o := owner{set: true}
	if o.uid, err = strconv.Atoi(u.Uid); err != nil {
		return owner{}, fmt.Errorf("--owner %q: user id %q is not a number", s, u.Uid)
	}
	gid := u.Gid
	if hasGroup {
		g, err := lookupGroup(gname)
		if err != nil {
			return owner{}, fmt.Errorf("--owner %q: %w", s, err)
		}
		gid = g.Gid
	}
	if o.gid, err = strconv.Atoi(gid); err != nil {
		return owner{}, fmt.Errorf("--owner %q: group id %q is not a number", s, gid)
	}
	return o, nil
}

// lookupUser finds a user by name, or by id; an id with no passwd entry stands for itself, with a group
// of the same number (as container images' users often are).
func lookupUser(name string) (*user.User, error) {
	if _, err := strconv.Atoi(name); err == nil {
		if u, err := user.LookupId(name); err == nil {
			return u, nil
		}
		return &user.User{Uid: name, Gid: name}, nil
	}
	u, err := user.Lookup(name)
	var unknown user.UnknownUserError
	if errors.As(err, &unknown) {
		return nil, fmt.Errorf("no user %q on this machine (create it first, see deploy/systemd)", name)
	}
	return u, err
}

func lookupGroup(name string) (*user.Group, error) {
	if _, err := strconv.Atoi(name); err == nil {
		return &user.Group{Gid: name}, nil
	}
	g, err := user.LookupGroup(name)
	var unknown user.UnknownGroupError
	if errors.As(err, &unknown) {
		return nil, fmt.Errorf("no group %q on this machine", name)
	}
	return g, err
}
