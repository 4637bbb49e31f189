package policy

// SharedScope is what a request without a device credential may do when the gateway runs with
// --shared-identity, on top of the device policy: the reference firmware's three requests (create its
// Node, patch that Node's status, read a ConfigMap) and the API server's public version and health. The
// API server's RBAC for the shared identity (deploy/rbac-shared.yaml) then decides which ConfigMaps, and
// the gateway which Nodes: only those picogate created for a device and no registered device owns. Such
// a request has no node of its own, so this scope is fixed: a policy file cannot widen it.
func SharedScope() []Rule {
	return []Rule{
		{Name: "node-create", Methods: []string{"POST"}, Path: "/api/v1/nodes"},
		{Name: "node-status", Methods: []string{"PATCH"}, Path: "/api/v1/nodes/{any}/status"},
		{Name: "configmap", Methods: []string{"GET"}, Path: "/api/v1/namespaces/{any}/configmaps/{any}"},
		{Name: "version", Methods: []string{"GET"}, Path: "/version"},
		{Name: "healthz", Methods: []string{"GET"}, Path: "/healthz"},
	}
}

// SharedNode returns the node a request in the shared scope writes: the name in
// /api/v1/nodes/NAME/status, or "" for any other path (a Node create names its Node in the body).
func SharedNode(path string) string {
	const prefix, suffix = "/api/v1/nodes/", "/status"
	if len(path) <= len(prefix)+len(suffix) || path[:len(prefix)] != prefix || path[len(path)-len(suffix):] != suffix {
		return ""
	}
	name := path[len(prefix) : len(path)-len(suffix)]
	if !validName(name) {
		return ""
	}
	return name
}
