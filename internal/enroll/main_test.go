package enroll

import (
	"context"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/picogate/picogate/internal/controlplane"
	"github.com/picogate/picogate/internal/controlplane/controlplanetest"
)

// shared is the control plane the package's tests share: what they check (conflicts on
// resourceVersion, conditional deletes) is the API server's behaviour, which a fake client does not
// have. Setup makes the namespace the device records and tokens live in.
var shared = &controlplanetest.Shared{Setup: func(c *controlplane.ControlPlane) error {
	_, err := kubernetes.NewForConfigOrDie(c.AdminConfig()).CoreV1().Namespaces().Create(context.Background(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "picogate-system"}}, metav1.CreateOptions{})
	return err
}}

func TestMain(m *testing.M) { shared.Main(m) }

var (
	adminOnce sync.Once
	adminCS   kubernetes.Interface
)

// client returns the admin client of the shared control plane (one client, so one rate limiter, for
// every test), starting the control plane on first use.
func client(t *testing.T) kubernetes.Interface {
	t.Helper()
	c := shared.Get(t)
	adminOnce.Do(func() { adminCS = kubernetes.NewForConfigOrDie(c.AdminConfig()) })
	return adminCS
}
