package setup

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

type issued struct {
	token   string
	expires time.Time
}

// issueToken asks the TokenRequest API for a token of the ServiceAccount. It is not bound to a pod or a
// secret: it lives until it expires, or until the ServiceAccount is deleted (a token names its
// ServiceAccount's UID, so deleting and re-creating the ServiceAccount revokes every token issued so far).
func issueToken(ctx context.Context, cs kubernetes.Interface, sa types.NamespacedName, ttl time.Duration) (issued, error) {
	secs := int64(ttl / time.Second)
	tr, err := cs.CoreV1().ServiceAccounts(sa.Namespace).CreateToken(ctx, sa.Name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &secs},
	}, metav1.CreateOptions{})
	if err != nil {
		return issued{}, fmt.Errorf("requesting a token for ServiceAccount %s: %w", sa, err)
	}
	if tr.Status.Token == "" {
		return issued{}, fmt.Errorf("requesting a token for ServiceAccount %s: the API server returned none", sa)
	}
	return issued{token: tr.Status.Token, expires: tr.Status.ExpirationTimestamp.Time}, nil
}

// caBundle is the API server's CA from the admin's configuration; the gateway's kubeconfig must verify
// the server exactly as the admin's does.
func caBundle(admin *rest.Config) ([]byte, error) {
	tls := admin.TLSClientConfig
	switch {
	case tls.Insecure:
		return nil, errors.New("the admin kubeconfig skips TLS verification (insecure-skip-tls-verify): setup needs the API server's CA to write a kubeconfig that verifies it")
	case len(tls.CAData) > 0:
		return tls.CAData, nil
	case tls.CAFile != "":
		b, err := os.ReadFile(tls.CAFile)
		if err != nil {
			return nil, fmt.Errorf("reading the API server's CA: %w", err)
		}
		return b, nil
	default:
		return nil, errors.New("the admin kubeconfig names no certificate authority for the API server: setup needs it to write a kubeconfig that verifies the server")
	}
}

// gatewayConfig is the configuration the written kubeconfig amounts to, held in memory to check the
// token before anything is written.
func gatewayConfig(admin *rest.Config, ca []byte, token string) *rest.Config {
	return &rest.Config{
		Host:            admin.Host,
		APIPath:         admin.APIPath,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: ca, ServerName: admin.ServerName},
		Timeout:         admin.Timeout,
		UserAgent:       "picogate-setup",
	}
}

// right is one permission the gateway uses, for verify to check.
type right struct {
	what  string
	attrs authorizationv1.ResourceAttributes
}

// verify checks the new credential as the gateway will use it: the token authenticates as the
// ServiceAccount and has every right listed. RBAC changes reach the API server's authorizer through an
// informer, so a just-applied binding is given a few seconds.
func verify(ctx context.Context, rc *rest.Config, sa types.NamespacedName, rights []right) (string, error) {
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return "", fmt.Errorf("building a client for the new token: %w", err)
	}
	r, err := cs.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("checking the new token: %w", err)
	}
	want := "system:serviceaccount:" + sa.Namespace + ":" + sa.Name
	if got := r.Status.UserInfo.Username; got != want {
		return "", fmt.Errorf("checking the new token: it authenticates as %q, want %q", got, want)
	}
	for _, rt := range rights {
		review := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &rt.attrs}}
		var reason string
		err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
			res, err := cs.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, review, metav1.CreateOptions{})
			if err != nil {
				return false, err
			}
			reason = res.Status.Reason
			return res.Status.Allowed, nil
		})
		if err != nil {
			return "", fmt.Errorf("checking the new token: %s may not %s (%s): %w", want, rt.what, reason, err)
		}
	}
	return want, nil
}
