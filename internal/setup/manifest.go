package setup

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/yaml"
)

// DecodeManifest splits a multi-document YAML manifest into objects, skipping empty documents.
func DecodeManifest(manifest []byte) ([]*unstructured.Unstructured, error) {
	dec := yaml.NewYAMLOrJSONDecoder(bytes.NewReader(manifest), 4096)
	var out []*unstructured.Unstructured
	for i := 1; ; i++ {
		var m map[string]any
		err := dec.Decode(&m)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if len(m) == 0 {
			continue
		}
		u := &unstructured.Unstructured{Object: m}
		if u.GetKind() == "" || u.GetAPIVersion() == "" || u.GetName() == "" {
			return nil, fmt.Errorf("document %d: want apiVersion, kind and metadata.name", i)
		}
		out = append(out, u)
	}
	if len(out) == 0 {
		return nil, errors.New("no objects")
	}
	return out, nil
}

// Retarget moves the manifest's objects from the namespace it declares (its one Namespace object) to ns:
// the Namespace itself, every namespaced object in it, and ServiceAccount subjects of bindings. A
// cluster-scoped binding is renamed NAME-ns, so gateways installed in two namespaces do not overwrite
// each other's binding (ClusterRoles are shared: they name no namespace). The input is not modified.
func Retarget(objs []*unstructured.Unstructured, ns string) ([]*unstructured.Unstructured, error) {
	from, err := declaredNamespace(objs)
	if err != nil {
		return nil, err
	}
	out := make([]*unstructured.Unstructured, len(objs))
	for i, o := range objs {
		o = o.DeepCopy()
		out[i] = o
		if from == ns {
			continue
		}
		switch {
		case o.GetKind() == "Namespace" && o.GetName() == from:
			o.SetName(ns)
		case o.GetNamespace() == from:
			o.SetNamespace(ns)
		case o.GetKind() == "ClusterRoleBinding":
			o.SetName(o.GetName() + "-" + ns)
		}
		if err := retargetSubjects(o, from, ns); err != nil {
			return nil, fmt.Errorf("%s %s: %w", o.GetKind(), o.GetName(), err)
		}
	}
	return out, nil
}

func declaredNamespace(objs []*unstructured.Unstructured) (string, error) {
	var names []string
	for _, o := range objs {
		if o.GetKind() == "Namespace" {
			names = append(names, o.GetName())
		}
	}
	if len(names) != 1 {
		return "", fmt.Errorf("want exactly one Namespace, got %d", len(names))
	}
	return names[0], nil
}

func retargetSubjects(o *unstructured.Unstructured, from, to string) error {
	subjects, found, err := unstructured.NestedSlice(o.Object, "subjects")
	if err != nil || !found {
		return err
	}
	for _, s := range subjects {
		m, ok := s.(map[string]any)
		if ok && m["kind"] == "ServiceAccount" && m["namespace"] == from {
			m["namespace"] = to
		}
	}
	return unstructured.SetNestedSlice(o.Object, subjects, "subjects")
}

// serviceAccount is the manifest's one ServiceAccount: the identity the token is issued for.
func serviceAccount(objs []*unstructured.Unstructured) (types.NamespacedName, error) {
	var found []types.NamespacedName
	for _, o := range objs {
		if o.GetKind() == "ServiceAccount" {
			found = append(found, types.NamespacedName{Namespace: o.GetNamespace(), Name: o.GetName()})
		}
	}
	if len(found) != 1 {
		return types.NamespacedName{}, fmt.Errorf("want exactly one ServiceAccount, got %d", len(found))
	}
	return found[0], nil
}

// describe names an object for the operator: "Kind name" or "Kind namespace/name".
func describe(o *unstructured.Unstructured) string {
	if o.GetNamespace() != "" {
		return o.GetKind() + " " + o.GetNamespace() + "/" + o.GetName()
	}
	return o.GetKind() + " " + o.GetName()
}
