// Package setup gives the gateway a credential of its own, so `picogate serve` never needs the cluster
// admin's: it server-side applies the gateway's RBAC (deploy/rbac.yaml, embedded in the binary, and with
// SharedIdentity deploy/rbac-shared.yaml), issues a token for the gateway's ServiceAccount with the
// TokenRequest API, checks that the token authenticates and has the rights the gateway uses, and writes a
// kubeconfig naming a token file and a CA file.
//
// The token is a file beside the kubeconfig, not inline, because client-go re-reads a kubeconfig's
// tokenFile about once a minute, exactly as it re-reads a pod's projected service-account token: running
// setup again renews the credential of a running gateway with no restart (the old token stays valid
// until it expires, so there is no gap).
package setup

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/picogate/picogate/deploy"
	"github.com/picogate/picogate/internal/registry"
)

const (
	// DefaultTokenTTL is the lifetime asked for: a year, so a gateway installed and forgotten keeps
	// working between the renewals of deploy/systemd/picogate-setup.timer (monthly) with months to spare.
	// The API server may cap it (--service-account-max-token-expiration); Result.Expires says what it gave.
	DefaultTokenTTL = 365 * 24 * time.Hour
	// MinTokenTTL is the shortest lifetime the TokenRequest API accepts.
	MinTokenTTL = 10 * time.Minute
	// DefaultOutput is where the systemd unit reads its kubeconfig.
	DefaultOutput = "/etc/picogate/kubeconfig"
	// FieldManager owns the applied fields (server-side apply), so a re-run updates rather than conflicts.
	FieldManager = "picogate-setup"
	// TokenSuffix and CASuffix name the files written beside the kubeconfig.
	TokenSuffix = ".token"
	CASuffix    = ".ca.crt"
)

// Config says what to set up. Admin and the zero value of everything else work.
type Config struct {
	// Admin is the credential of whoever runs setup: it must be allowed to create the RBAC objects and a
	// token for the ServiceAccount. It is used for nothing else and is never written anywhere.
	Admin *rest.Config
	// Namespace holds the ServiceAccount and the device records. Default picogate-system; another
	// namespace gets the same objects moved there (see Retarget).
	Namespace string
	// TokenTTL is the token lifetime to request. Default DefaultTokenTTL; at least MinTokenTTL.
	TokenTTL time.Duration
	// Output is the kubeconfig path; the token and CA are written to Output+TokenSuffix and
	// Output+CASuffix. Default DefaultOutput.
	Output string
	// Owner, "user" or "user:group" (names or numeric ids), owns the written files, which are always
	// mode 0600; empty keeps the writer's. The systemd unit's user must be able to read them.
	Owner string
	// SharedIdentity also applies deploy/rbac-shared.yaml, for `picogate serve --shared-identity`: the
	// gateway may then impersonate the group picogate:shared, which may create Nodes and patch their
	// status (the gateway limits which). Off by default: a gateway whose boards all have credentials
	// never needs it.
	SharedIdentity bool
	// Manifest is the RBAC to apply. Default deploy.RBAC(), followed by deploy.RBACShared() when
	// SharedIdentity is set.
	Manifest []byte
	// Timeout bounds each API call. Default 30s.
	Timeout time.Duration
}

// Setup applies the RBAC and writes the credential.
type Setup struct {
	cfg     Config
	objects []*unstructured.Unstructured
	sa      types.NamespacedName
	owner   owner
	files   files
}

// Result is what a run did, for the operator.
type Result struct {
	Applied        []string  // "Kind name" or "Kind namespace/name", in apply order
	ServiceAccount string    // namespace/name
	Username       string    // what the API server says the new token is
	Expires        time.Time // when the token stops working, as the API server set it
	Requested      time.Duration
	Kubeconfig     string
	TokenFile      string
	CAFile         string
	SharedIdentity bool // rbac-shared.yaml was applied: serve with --shared-identity
}

// New validates cfg, reporting every problem at once.
func New(cfg Config) (*Setup, error) {
	if cfg.Namespace == "" {
		cfg.Namespace = registry.DefaultNamespace
	}
	if cfg.TokenTTL == 0 {
		cfg.TokenTTL = DefaultTokenTTL
	}
	if cfg.Output == "" {
		cfg.Output = DefaultOutput
	}
	if cfg.Manifest == nil {
		cfg.Manifest = deploy.RBAC()
		if cfg.SharedIdentity {
			cfg.Manifest = append(append(cfg.Manifest, "\n---\n"...), deploy.RBACShared()...)
		}
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 30 * time.Second
	}
	s := &Setup{cfg: cfg}
	var errs []error
	if cfg.Admin == nil {
		errs = append(errs, errors.New("no admin credential to apply the RBAC with"))
	}
	if cfg.TokenTTL < MinTokenTTL {
		errs = append(errs, fmt.Errorf("--token-ttl %s: the TokenRequest API needs at least %s", cfg.TokenTTL, MinTokenTTL))
	}
	if msgs := validation.IsDNS1123Label(cfg.Namespace); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("--namespace %q: %s", cfg.Namespace, strings.Join(msgs, "; ")))
	}
	out, err := filepath.Abs(cfg.Output)
	if err != nil {
		errs = append(errs, fmt.Errorf("--output %q: %w", cfg.Output, err))
	}
	s.files = files{Kubeconfig: out, Token: out + TokenSuffix, CA: out + CASuffix}
	if s.owner, err = parseOwner(cfg.Owner); err != nil {
		errs = append(errs, err)
	}
	objs, err := DecodeManifest(cfg.Manifest)
	if err == nil {
		objs, err = Retarget(objs, cfg.Namespace)
	}
	if err == nil {
		s.sa, err = serviceAccount(objs)
	}
	if err != nil {
		errs = append(errs, fmt.Errorf("gateway RBAC manifest: %w", err))
	}
	s.objects = objs
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return s, nil
}

// rights are what the gateway will do with the credential, checked before it is written.
func (s *Setup) rights() []right {
	r := []right{
		{"watch the device records in namespace " + s.cfg.Namespace, authorizationv1.ResourceAttributes{Namespace: s.cfg.Namespace, Verb: "watch", Resource: "secrets"}},
		{"watch nodes", authorizationv1.ResourceAttributes{Verb: "watch", Resource: "nodes"}},
		{"impersonate the group system:nodes", authorizationv1.ResourceAttributes{Verb: "impersonate", Resource: "groups", Name: "system:nodes"}},
	}
	if s.cfg.SharedIdentity {
		r = append(r, right{"impersonate the group picogate:shared", authorizationv1.ResourceAttributes{Verb: "impersonate", Resource: "groups", Name: "picogate:shared"}})
	}
	return r
}

// Run applies the RBAC, issues and checks a token, and writes the files. Running it again is safe: the
// objects are applied again (a no-op when nothing changed), a new token is issued and the files are
// replaced atomically, which is how the credential is renewed.
func (s *Setup) Run(ctx context.Context) (*Result, error) {
	admin := rest.CopyConfig(s.cfg.Admin)
	admin.Timeout = s.cfg.Timeout
	ca, err := caBundle(admin)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(admin)
	if err != nil {
		return nil, fmt.Errorf("building admin client: %w", err)
	}
	cs, err := kubernetes.NewForConfig(admin)
	if err != nil {
		return nil, fmt.Errorf("building admin client: %w", err)
	}
	res := &Result{Requested: s.cfg.TokenTTL, SharedIdentity: s.cfg.SharedIdentity, Kubeconfig: s.files.Kubeconfig, TokenFile: s.files.Token, CAFile: s.files.CA,
		ServiceAccount: s.sa.Namespace + "/" + s.sa.Name}
	if res.Applied, err = apply(ctx, dyn, cs.Discovery(), s.objects); err != nil {
		return nil, err
	}
	tok, err := issueToken(ctx, cs, s.sa, s.cfg.TokenTTL)
	if err != nil {
		return nil, err
	}
	res.Expires = tok.expires
	gateway := gatewayConfig(admin, ca, tok.token)
	if res.Username, err = verify(ctx, gateway, s.sa, s.rights()); err != nil {
		return nil, err
	}
	kc, err := kubeconfig(admin.Host, admin.ServerName, s.files, s.cfg.Namespace)
	if err != nil {
		return nil, err
	}
	// The kubeconfig goes last, so it never names a file that is not there yet.
	if err := s.files.write(ca, []byte(tok.token), kc, s.owner); err != nil {
		return nil, err
	}
	return res, nil
}
