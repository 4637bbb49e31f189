package registry

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// deviceSecrets lists the names of the device Secrets in the store's namespace.
func deviceSecrets(t *testing.T, s *Store) []string {
	t.Helper()
	l, err := s.Client.CoreV1().Secrets(s.Namespace).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, sec := range l.Items {
		names = append(names, sec.Name)
	}
	slices.Sort(names)
	return names
}

// A batch lands whole or not at all: when the Nth create fails, the records this call wrote are deleted
// again, and records it did not write are left alone.
func TestStoreAddRollback(t *testing.T) {
	reqs := []AddRequest{{Name: "pico-1", Auth: AuthToken}, {Name: "pico-2", Auth: AuthHMAC}, {Name: "pico-3", Auth: AuthIP, Source: "10.0.0.3"}}
	secretGR := schema.GroupResource{Resource: "secrets"}
	for _, tc := range []struct {
		name   string
		failAt int                                        // the create that fails, counted from 1; 0: none
		fail   func(c *fake.Clientset, name string) error // what the failing create does and returns
		want   string                                     // a substring of Add's error
		left   []string                                   // the Secrets left afterwards
	}{
		{"no failure", 0, nil, "", []string{"device-pico-1", "device-pico-2", "device-pico-3"}},
		{"first create fails", 1, func(*fake.Clientset, string) error { return errors.New("etcdserver: request timed out") },
			`adding device "pico-1": etcdserver: request timed out (no device of this batch was kept)`, nil},
		{"last create fails", 3, func(*fake.Clientset, string) error { return apierrors.NewServiceUnavailable("apiserver shutting down") },
			`adding device "pico-3"`, nil},
		{"another writer creates the same record first", 2, func(c *fake.Clientset, name string) error {
			// Between Add's check and its write, someone else registers pico-2: theirs must stay.
			other := (&Store{Namespace: DefaultNamespace}).secret(&Device{Name: "pico-2", Auth: AuthToken, TokenHash: HashToken("pgt_theirs")})
			if err := c.Tracker().Create(schema.GroupVersionResource{Version: "v1", Resource: "secrets"}, other, DefaultNamespace); err != nil {
				return err
			}
			return apierrors.NewAlreadyExists(secretGR, name)
		}, `device "pico-2" already exists`, []string{"device-pico-2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client := fake.NewClientset()
			creates := 0
			client.PrependReactor("create", "secrets", func(a k8stesting.Action) (bool, runtime.Object, error) {
				creates++
				if creates != tc.failAt {
					return false, nil, nil
				}
				return true, nil, tc.fail(client, a.(k8stesting.CreateAction).GetObject().(*corev1.Secret).Name)
			})
			s := NewStore(client, "")
			creds, err := s.Add(context.Background(), reqs)
			switch {
			case tc.want == "" && (err != nil || len(creds) != len(reqs)):
				t.Fatalf("got %d credentials, %v; want %d, no error", len(creds), err, len(reqs))
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || creds != nil):
				t.Fatalf("got %d credentials, %v; want none and an error containing %q", len(creds), err, tc.want)
			}
			if got := deviceSecrets(t, s); !slices.Equal(got, tc.left) {
				t.Errorf("Secrets left: got %q, want %q", got, tc.left)
			}
			if tc.name == "another writer creates the same record first" {
				sec, err := s.get(context.Background(), "pico-2")
				if err != nil {
					t.Fatal(err)
				}
				if d, err := fromSecretData(sec.Data); err != nil || d.TokenHash != HashToken("pgt_theirs") {
					t.Errorf("the other writer's pico-2: got %+v, %v; want its record untouched", d, err)
				}
			}
		})
	}
}

// Nothing is written when any request of the batch is refused before the writes.
func TestStoreAddChecksBeforeWriting(t *testing.T) {
	realNode := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "worker-1"}}
	existing := (&Store{Namespace: DefaultNamespace}).secret(&Device{Name: "pico-9", Auth: AuthToken, TokenHash: HashToken("pgt_9")})
	for _, tc := range []struct {
		name string
		reqs []AddRequest
		want []string
	}{
		{"invalid name", []AddRequest{{Name: "pico-1", Auth: AuthToken}, {Name: "Pico_2", Auth: AuthToken}}, []string{"invalid device name"}},
		{"listed twice", []AddRequest{{Name: "pico-1", Auth: AuthToken}, {Name: "pico-1", Auth: AuthHMAC}}, []string{`"pico-1" listed twice`}},
		{"ip without an address", []AddRequest{{Name: "pico-1", Auth: AuthToken}, {Name: "pico-2", Auth: AuthIP}}, []string{"--auth ip needs --ip"}},
		{"existing record", []AddRequest{{Name: "pico-1", Auth: AuthToken}, {Name: "pico-9", Auth: AuthToken}}, []string{`"pico-9" already exists`}},
		{"a real node's name", []AddRequest{{Name: "pico-1", Auth: AuthToken}, {Name: "worker-1", Auth: AuthToken}}, []string{`"worker-1": a real node has that name`}},
		{"every problem at once", []AddRequest{{Name: "pico-9", Auth: AuthToken}, {Name: "worker-1", Auth: AuthToken}},
			[]string{`"pico-9" already exists`, `"worker-1": a real node`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client := fake.NewClientset(realNode, existing)
			creates := 0
			client.PrependReactor("create", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
				creates++
				return false, nil, nil
			})
			_, err := NewStore(client, "").Add(context.Background(), tc.reqs)
			for _, w := range tc.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("got %v, want an error containing %q", err, w)
				}
			}
			if creates != 0 {
				t.Errorf("Secret creates: got %d, want 0", creates)
			}
		})
	}
}
