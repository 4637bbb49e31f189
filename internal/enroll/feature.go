package enroll

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/picogate/picogate/internal/gateway"
	"github.com/picogate/picogate/internal/registry"
)

// DeregisterGroup is the group the gateway adds, for one request only, when it deletes a deregistering
// device's Node as that device. The Node authorizer lets a node delete its own Lease but not its own
// Node (verified against kube-apiserver v1.37.2), so deploy/rbac-enrollment.yaml grants this group
// "delete nodes"; NodeRestriction admission then refuses a node deleting any Node but its own.
const DeregisterGroup = "picogate:deregistering"

// FeatureConfig is what `picogate serve --enrollment` hands the enrollment feature.
type FeatureConfig struct {
	// REST and Client are the gateway's own connection to the API server. Required.
	REST   *rest.Config
	Client kubernetes.Interface
	// Registry is the gateway's view of the device records (see Config.Registry). Required.
	Registry interface {
		ByName(name string) (*registry.Device, bool)
	}
	// Namespace holds device records and tokens. Default picogate-system.
	Namespace string
	// RequireHMAC: see Config.RequireHMAC.
	RequireHMAC bool
	Logger      *slog.Logger
}

// Feature is enrollment, built: the background Service to run and the gateway's local routes.
type Feature struct {
	Service *Service
	Routes  []gateway.LocalRoute
}

// NewFeature builds the --enrollment feature: its background service and its endpoints.
func NewFeature(cfg FeatureConfig) (*Feature, error) {
	if cfg.REST == nil || cfg.Client == nil || cfg.Registry == nil {
		return nil, errors.New("enrollment: the gateway's API server connection and registry are required")
	}
	log := cfg.Logger
	store := registry.NewStore(cfg.Client, cfg.Namespace)
	tokens := NewTokens(cfg.Client, cfg.Namespace)
	keys := NewGatewayKeys(cfg.Client, cfg.Namespace)
	en, err := New(Config{Store: store, Tokens: tokens, Nodes: cfg.Client.CoreV1().Nodes(), Keys: keys, Registry: cfg.Registry,
		DeleteNode: deleteNodeAsDevice(cfg.REST, cfg.Client), RequireHMAC: cfg.RequireHMAC, Logger: log})
	if err != nil {
		return nil, err
	}
	h, err := NewHandlers(HandlersConfig{Enroller: en, DeviceFrom: gateway.DeviceFrom, SigningKey: gateway.SigningKey, Refuse: gateway.Refuse, Logger: log})
	if err != nil {
		return nil, err
	}
	svc, err := NewService(ServiceConfig{Tokens: tokens, Store: store, Keys: keys, Logger: log})
	if err != nil {
		return nil, err
	}
	p := gateway.LocalPrefix
	return &Feature{Service: svc, Routes: []gateway.LocalRoute{
		{Method: http.MethodPost, Path: p + "enroll", Name: "enroll", OptionalDevice: true, MaxBodyBytes: MaxRequestBytes, Handler: http.HandlerFunc(h.Enroll)},
		{Method: http.MethodPost, Path: p + "rotate", Name: "rotate", Device: true, MaxBodyBytes: MaxRequestBytes, Handler: http.HandlerFunc(h.Rotate)},
		{Method: http.MethodPost, Path: p + "deregister", Name: "deregister", Device: true, MaxBodyBytes: MaxRequestBytes, Handler: http.HandlerFunc(h.Deregister)},
	}}, nil
}

// deleteNodeAsDevice deletes a device's Lease and Node if the Node is the device's: the gateway reads
// the Node with its own identity (get nodes, deploy/rbac-enrollment.yaml) and deletes as the device
// itself, so the API server confines the deletion to that one node and its audit log names the node.
func deleteNodeAsDevice(rc *rest.Config, own kubernetes.Interface) func(ctx context.Context, name string) (registry.NodeOutcome, error) {
	return func(ctx context.Context, name string) (registry.NodeOutcome, error) {
		c := rest.CopyConfig(rc)
		c.Impersonate = rest.ImpersonationConfig{UserName: registry.NodeUser(name), Groups: []string{"system:nodes", DeregisterGroup}}
		cs, err := kubernetes.NewForConfig(c)
		if err != nil {
			return registry.NodeAbsent, fmt.Errorf("client for node %q: %w", name, err)
		}
		return registry.DeleteDeviceNode(ctx, own.CoreV1().Nodes(), cs, name)
	}
}
