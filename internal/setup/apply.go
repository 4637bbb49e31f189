package setup

import (
	"context"
	"fmt"
	"sort"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
)

// apply server-side applies objs with FieldManager, Namespaces first, and returns what it applied. Force
// takes ownership of fields another manager set (a hand edit, or a client-side `kubectl apply` of the same
// file): setup's job is to make the RBAC what rbac.yaml says, no more and no less.
func apply(ctx context.Context, dyn dynamic.Interface, disc discovery.DiscoveryInterface, objs []*unstructured.Unstructured) ([]string, error) {
	groups, err := restmapper.GetAPIGroupResourcesWithContext(ctx, discovery.ToDiscoveryInterfaceWithContext(disc))
	if err != nil {
		return nil, fmt.Errorf("asking the API server which resources it serves: %w", err)
	}
	mapper := restmapper.NewDiscoveryRESTMapper(groups)
	ordered := append([]*unstructured.Unstructured(nil), objs...)
	sort.SliceStable(ordered, func(i, j int) bool {
		return ordered[i].GetKind() == "Namespace" && ordered[j].GetKind() != "Namespace"
	})
	var applied []string
	for _, o := range ordered {
		what := describe(o)
		gvk := o.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			return applied, fmt.Errorf("applying %s: %w", what, err)
		}
		var r dynamic.ResourceInterface = dyn.Resource(m.Resource)
		if o.GetNamespace() != "" {
			r = dyn.Resource(m.Resource).Namespace(o.GetNamespace())
		}
		if _, err := r.Apply(ctx, o.GetName(), o, metav1.ApplyOptions{FieldManager: FieldManager, Force: true}); err != nil {
			return applied, fmt.Errorf("applying %s: %w", what, err)
		}
		applied = append(applied, what)
	}
	return applied, nil
}
