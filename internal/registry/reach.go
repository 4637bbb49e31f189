package registry

import (
	"context"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/picogate/picogate/internal/firstlist"
)

// waitListable lists the device records until that succeeds, saying in the log why it cannot (see
// package firstlist), so a gateway started during an API server outage is ready as soon as the API
// server is back. It returns false if ctx ends first.
func (r *Cache) waitListable(ctx context.Context) bool {
	opts := metav1.ListOptions{
		Limit:         1,
		LabelSelector: labels.SelectorFromSet(labels.Set{LabelKind: KindDevice}).String(),
		FieldSelector: fields.OneTermEqualSelector("type", SecretType).String(),
	}
	return firstlist.Wait(ctx, firstlist.Config{
		List: func(ctx context.Context) error {
			_, err := r.cfg.Client.CoreV1().Secrets(r.cfg.Namespace).List(ctx, opts)
			return err
		},
		Logger:    r.log,
		Failing:   "device registry: cannot list the device records; retrying",
		Recovered: "device registry: the API server answers; loading the device records",
		Attrs:     []any{"namespace", r.cfg.Namespace},
	})
}
