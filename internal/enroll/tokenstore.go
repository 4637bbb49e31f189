package enroll

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"

	"github.com/picogate/picogate/internal/registry"
)

// Tokens stores enrollment tokens as Secrets in the gateway's namespace. The CLI creates, lists and
// revokes them; the gateway consumes them and deletes expired ones.
type Tokens struct {
	Client    kubernetes.Interface
	Namespace string
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
}

// NewTokens returns a token store for namespace (default picogate-system).
func NewTokens(c kubernetes.Interface, namespace string) *Tokens {
	if namespace == "" {
		namespace = registry.DefaultNamespace
	}
	return &Tokens{Client: c, Namespace: namespace, Now: time.Now}
}

// TokenSpec is what `picogate token create` asks for.
type TokenSpec struct {
	TTL  time.Duration // required, > 0
	Uses int           // 0: any number of enrollments until it expires
	// Prefix starts every name the token may enroll. Required: device names share the namespace of real
	// nodes, and a prefix keeps a token's names apart from them (`token create` defaults to "pico-").
	Prefix  string
	Approve Approve // default auto
}

// Validate checks a TokenSpec, reporting every problem.
func (s TokenSpec) Validate() error {
	var errs []error
	if s.TTL <= 0 {
		errs = append(errs, fmt.Errorf("--ttl %v: want a positive duration such as 1h", s.TTL))
	}
	if s.Uses < 0 {
		errs = append(errs, fmt.Errorf("--uses %d: want 0 (unlimited until it expires) or more", s.Uses))
	}
	if s.Prefix == "" {
		errs = append(errs, errors.New("--prefix: an enrollment token needs a name prefix such as pico- (device names share the namespace of real nodes)"))
	} else if err := registry.ValidateName(s.Prefix + "x"); err != nil {
		errs = append(errs, fmt.Errorf("--prefix %q: names starting with it cannot be node names", s.Prefix))
	}
	if s.Approve != "" && s.Approve != ApproveAuto && s.Approve != ApproveManual {
		errs = append(errs, fmt.Errorf("--approve %q: want auto or manual", s.Approve))
	}
	return errors.Join(errs...)
}

// Create stores a new token and returns it: the only time it exists outside the device that uses it.
func (t *Tokens) Create(ctx context.Context, spec TokenSpec) (registry.Token, *TokenInfo, error) {
	if err := spec.Validate(); err != nil {
		return "", nil, err
	}
	if spec.Approve == "" {
		spec.Approve = ApproveAuto
	}
	now := t.Now()
	for range 5 { // a taken id (1 in 2 billion) just draws another
		tok, id, err := newToken()
		if err != nil {
			return "", nil, err
		}
		info := &TokenInfo{ID: id, Expires: now.Add(spec.TTL).Truncate(time.Second), Uses: spec.Uses, Prefix: spec.Prefix,
			Approve: spec.Approve, Created: now.Truncate(time.Second), hash: HashToken(tok.Reveal())}
		sec := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: TokenSecretPrefix + id, Namespace: t.Namespace,
				Labels: map[string]string{registry.LabelKind: KindToken, registry.LabelManaged: registry.ManagedBy}},
			Type: TokenSecretType,
			Data: tokenData(info),
		}
		_, err = t.Client.CoreV1().Secrets(t.Namespace).Create(ctx, sec, metav1.CreateOptions{FieldManager: "picogate"})
		if apierrors.IsAlreadyExists(err) {
			continue
		}
		if err != nil {
			return "", nil, fmt.Errorf("creating enrollment token: %w", err)
		}
		return tok, info, nil
	}
	return "", nil, errors.New("creating enrollment token: no free token id after 5 tries")
}

// List returns every token, soonest expiry first, expired ones included (until the gateway sweeps them).
func (t *Tokens) List(ctx context.Context) ([]*TokenInfo, error) {
	list, err := t.Client.CoreV1().Secrets(t.Namespace).List(ctx, metav1.ListOptions{LabelSelector: registry.LabelKind + "=" + KindToken})
	if err != nil {
		return nil, fmt.Errorf("listing enrollment tokens in %q: %w", t.Namespace, err)
	}
	var out []*TokenInfo
	for _, s := range list.Items {
		if s.Type != TokenSecretType {
			continue
		}
		if info, err := fromTokenData(s.Data); err == nil {
			out = append(out, info)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Expires.Before(out[j].Expires) })
	return out, nil
}

// Token errors: each is a distinct answer to the device.
var (
	// ErrUnknownToken: no such token, a wrong secret, or revoked (401).
	ErrUnknownToken = errors.New("enrollment token unknown or revoked")
	// ErrTokenExpired: past its expiry, not yet deleted (410).
	ErrTokenExpired = errors.New("enrollment token expired")
	// ErrTokenExhausted: every use has been spent (410).
	ErrTokenExhausted = errors.New("enrollment token has no uses left")
)

// consumeBackoff retries a use lost to another enrollment writing the same token at the same moment (a
// fleet enrolling together). Each retry re-reads the token, so N uses stay N.
var consumeBackoff = wait.Backoff{Steps: 12, Duration: 5 * time.Millisecond, Factor: 1.6, Jitter: 0.5, Cap: 500 * time.Millisecond}

// Consume spends one use of tok. It checks, in order, that the token exists and the secret matches (in
// constant time), that it has not expired and has uses left; then check(info) may refuse the enrollment
// without spending a use; then the use count is written with the resourceVersion it was read at, so
// concurrent enrollments on several gateway replicas never spend more uses than the token has.
func (t *Tokens) Consume(ctx context.Context, tok string, check func(*TokenInfo) error) (*TokenInfo, error) {
	id, err := ParseToken(tok)
	if err != nil {
		return nil, ErrUnknownToken
	}
	var info *TokenInfo
	err = retry.RetryOnConflict(consumeBackoff, func() error {
		sec, i, err := t.load(ctx, id, tok)
		if err != nil {
			return err
		}
		if err := check(i); err != nil {
			return err
		}
		i.Used++
		sec.Data = tokenData(i)
		if _, err := t.Client.CoreV1().Secrets(t.Namespace).Update(ctx, sec, metav1.UpdateOptions{FieldManager: "picogate"}); err != nil {
			return err
		}
		info = i
		return nil
	})
	if err != nil {
		return nil, err
	}
	return info, nil
}

// load reads and checks a token: it exists, matches, has not expired and has uses left.
func (t *Tokens) load(ctx context.Context, id, tok string) (*corev1.Secret, *TokenInfo, error) {
	sec, err := t.Client.CoreV1().Secrets(t.Namespace).Get(ctx, TokenSecretPrefix+id, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil, ErrUnknownToken
	}
	if err != nil {
		return nil, nil, fmt.Errorf("reading enrollment token %s: %w", id, err)
	}
	if sec.Type != TokenSecretType {
		return nil, nil, ErrUnknownToken
	}
	info, err := fromTokenData(sec.Data)
	if err != nil {
		return nil, nil, fmt.Errorf("enrollment token %s is invalid: %w", id, err)
	}
	h := HashToken(tok)
	if subtle.ConstantTimeCompare(h[:], info.hash[:]) != 1 {
		return nil, nil, ErrUnknownToken
	}
	switch {
	case info.Expired(t.Now()):
		return nil, nil, ErrTokenExpired
	case info.Exhausted():
		return nil, nil, ErrTokenExhausted
	}
	return sec, info, nil
}

// Revoke deletes a token, and cancels the enrollments it left waiting for approval: a device that never
// got a credential is deleted, a re-enrollment of an existing device is dropped (the device keeps its
// current credential).
func (t *Tokens) Revoke(ctx context.Context, id string, store *registry.Store) (cancelled []string, err error) {
	if len(id) != idLen || !lowerAlnum(id) {
		return nil, fmt.Errorf("invalid token id %q: want the 6 characters after pge_", id)
	}
	sec, err := t.Client.CoreV1().Secrets(t.Namespace).Get(ctx, TokenSecretPrefix+id, metav1.GetOptions{})
	if apierrors.IsNotFound(err) || (err == nil && sec.Type != TokenSecretType) {
		return nil, fmt.Errorf("no enrollment token %q in namespace %q", id, t.Namespace)
	}
	if err != nil {
		return nil, fmt.Errorf("revoking enrollment token %s: %w", id, err)
	}
	info, err := fromTokenData(sec.Data)
	if err != nil {
		return nil, fmt.Errorf("enrollment token %s is invalid: %w", id, err)
	}
	if err := t.Client.CoreV1().Secrets(t.Namespace).Delete(ctx, sec.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("revoking enrollment token %s: %w", id, err)
	}
	cancelled, err = store.CancelEnrollments(ctx, id, info.hash)
	if err != nil {
		return cancelled, fmt.Errorf("enrollment token %s revoked, but: %w", id, err)
	}
	return cancelled, nil
}

// Sweep deletes expired tokens. Each delete is conditional on the version read, and a token already
// gone is fine, so any number of gateway replicas may sweep at once.
func (t *Tokens) Sweep(ctx context.Context) (int, error) {
	list, err := t.Client.CoreV1().Secrets(t.Namespace).List(ctx, metav1.ListOptions{LabelSelector: registry.LabelKind + "=" + KindToken})
	if err != nil {
		return 0, fmt.Errorf("listing enrollment tokens: %w", err)
	}
	now := t.Now()
	n := 0
	var errs []error
	for _, s := range list.Items {
		info, err := fromTokenData(s.Data)
		if s.Type != TokenSecretType || err != nil || !info.Expired(now) {
			continue
		}
		uid, rv := s.UID, s.ResourceVersion
		err = t.Client.CoreV1().Secrets(t.Namespace).Delete(ctx, s.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid, ResourceVersion: &rv}})
		switch {
		case err == nil:
			n++
		case apierrors.IsNotFound(err), apierrors.IsConflict(err):
		default:
			errs = append(errs, fmt.Errorf("deleting expired enrollment token %s: %w", info.ID, err))
		}
	}
	return n, errors.Join(errs...)
}
