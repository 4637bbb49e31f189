package controlplanetest

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// FleetConfigValues is data.memory_values of the ConfigMap SeedFleet creates: what a device reading
// its configuration through the gateway should get.
const FleetConfigValues = "[7,8,9]"

// FleetConfigRole names the Role and RoleBinding SeedFleet creates, as deploy/examples/fleet-config-rbac.yaml
// does.
const FleetConfigRole = "picogate-fleet-config"

// SeedFleet creates what the reference firmware reads besides its own Node: ConfigMap default/pico-config,
// and a Role and RoleBinding letting the group picogate:devices get it (the Node authorizer alone refuses
// it, since no pod on the node references it). Objects that exist already are left as they are.
func SeedFleet(ctx context.Context, cs kubernetes.Interface) error {
	err := ignoreExists(cs.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "pico-config"},
		Data:       map[string]string{"memory_values": FleetConfigValues},
	}, metav1.CreateOptions{}))
	if err != nil {
		return err
	}
	err = ignoreExists(cs.RbacV1().Roles("default").Create(ctx, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: FleetConfigRole},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, ResourceNames: []string{"pico-config"}, Verbs: []string{"get"}}},
	}, metav1.CreateOptions{}))
	if err != nil {
		return err
	}
	return ignoreExists(cs.RbacV1().RoleBindings("default").Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: FleetConfigRole},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: FleetConfigRole},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: "picogate:devices"}},
	}, metav1.CreateOptions{}))
}

// CreateDefaultServiceAccount creates ServiceAccount default/default, which pod admission wants and which
// only kube-controller-manager would create otherwise. One that exists already is left as it is.
func CreateDefaultServiceAccount(ctx context.Context, cs kubernetes.Interface) error {
	return ignoreExists(cs.CoreV1().ServiceAccounts("default").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}))
}

func ignoreExists[T any](_ T, err error) error {
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}
