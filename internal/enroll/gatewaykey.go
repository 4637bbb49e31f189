package enroll

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/picogate/picogate/device"
	"github.com/picogate/picogate/internal/registry"
)

// The gateway's static key pair for hmac key agreement (docs/device-protocol.md, "Key agreement"): one
// Secret in the registry namespace, read by every replica, so all replicas have one key, whose public
// half hmac firmware pins.
const (
	GatewayKeySecret     = "picogate-gateway-key"
	GatewayKeySecretType = "picogate.io/gateway-key"
	KindGatewayKey       = "gateway-key"
	gatewayKeyData       = "x25519" // the 32 raw private bytes
)

// GatewayKey is the gateway's X25519 key pair. It formats and logs as its public key only.
type GatewayKey struct {
	priv *ecdh.PrivateKey
	pub  []byte
}

func newGatewayKey(private []byte) (*GatewayKey, error) {
	if len(private) != device.GatewayKeySize {
		return nil, fmt.Errorf("%s is %d bytes, want %d", gatewayKeyData, len(private), device.GatewayKeySize)
	}
	priv, err := ecdh.X25519().NewPrivateKey(private)
	if err != nil {
		return nil, fmt.Errorf("%s is not an X25519 private key", gatewayKeyData)
	}
	return &GatewayKey{priv: priv, pub: priv.PublicKey().Bytes()}, nil
}

// Public returns S, the public key (32 bytes) the firmware pins.
func (k *GatewayKey) Public() []byte { return append([]byte(nil), k.pub...) }

// PublicHex is S as the firmware's configuration and `picogate token create` write it: 64 hex digits.
func (k *GatewayKey) PublicHex() string { return hex.EncodeToString(k.pub) }

// String is the public key: the private half never reaches %v.
func (k *GatewayKey) String() string { return k.PublicHex() }

// LogValue is the public key: the private half never reaches a log.
func (k *GatewayKey) LogValue() slog.Value { return slog.StringValue(k.PublicHex()) }

// shared returns X25519(s, E) for a board's ephemeral public key E.
func (k *GatewayKey) shared(ephemeral []byte) ([]byte, error) {
	pub, err := ecdh.X25519().NewPublicKey(ephemeral)
	if err != nil {
		return nil, errors.New("ephemeralKey is not an X25519 public key")
	}
	dh, err := k.priv.ECDH(pub)
	if err != nil {
		return nil, errors.New("ephemeralKey is a low-order point: no key can be agreed with it")
	}
	return dh, nil
}

// EnsureGatewayKey returns the gateway key from its Secret in namespace, creating the Secret with a
// fresh key if there is none. Create-once: when two replicas (or a replica and `picogate token create`)
// create it at the same moment the API server keeps one, and the loser reads the winner's.
func EnsureGatewayKey(ctx context.Context, c kubernetes.Interface, namespace string) (*GatewayKey, error) {
	if namespace == "" {
		namespace = registry.DefaultNamespace
	}
	secrets := c.CoreV1().Secrets(namespace)
	sec, err := secrets.Get(ctx, GatewayKeySecret, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		var priv *ecdh.PrivateKey
		if priv, err = ecdh.X25519().GenerateKey(rand.Reader); err != nil {
			return nil, fmt.Errorf("generating the gateway key: %w", err)
		}
		sec, err = secrets.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: GatewayKeySecret, Namespace: namespace,
				Labels: map[string]string{registry.LabelKind: KindGatewayKey, registry.LabelManaged: registry.ManagedBy}},
			Type: GatewayKeySecretType,
			Data: map[string][]byte{gatewayKeyData: priv.Bytes()},
		}, metav1.CreateOptions{FieldManager: "picogate"})
		if apierrors.IsAlreadyExists(err) {
			sec, err = secrets.Get(ctx, GatewayKeySecret, metav1.GetOptions{})
		}
	}
	if err != nil {
		return nil, fmt.Errorf("gateway key (Secret %s/%s): %w", namespace, GatewayKeySecret, err)
	}
	if sec.Type != GatewayKeySecretType {
		return nil, fmt.Errorf("gateway key: Secret %s/%s has type %q, want %s", namespace, GatewayKeySecret, sec.Type, GatewayKeySecretType)
	}
	k, err := newGatewayKey(sec.Data[gatewayKeyData])
	if err != nil {
		return nil, fmt.Errorf("gateway key: Secret %s/%s: %w", namespace, GatewayKeySecret, err)
	}
	return k, nil
}

// GatewayKeys loads the gateway key once and keeps it: at start (Service.Run), or on the first request
// that needs it if the API server could not be reached until then.
type GatewayKeys struct {
	client    kubernetes.Interface
	namespace string

	mu  sync.Mutex
	key *GatewayKey
}

// NewGatewayKeys returns a loader of the gateway key in namespace.
func NewGatewayKeys(c kubernetes.Interface, namespace string) *GatewayKeys {
	return &GatewayKeys{client: c, namespace: namespace}
}

// Get returns the gateway key, reading (or creating) its Secret if it has not been loaded yet.
func (g *GatewayKeys) Get(ctx context.Context) (*GatewayKey, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.key != nil {
		return g.key, nil
	}
	k, err := EnsureGatewayKey(ctx, g.client, g.namespace)
	if err != nil {
		return nil, err
	}
	g.key = k
	return k, nil
}
