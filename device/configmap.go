package device

import (
	"context"
	"errors"
	"fmt"
	"net/http"
)

// configCopy is the last answer to a ConfigMap read: its ETag and data.
type configCopy struct {
	etag string
	data map[string]string
}

// ConfigMap reads ConfigMap namespace/name (one the device may read, such
// as the fleet's default/pico-config) and returns its data. The agent keeps
// the last answer's ETag and sends it as If-None-Match, so while the
// ConfigMap is unchanged the gateway answers 304 without a body and the data
// already held is returned: a board polling its configuration receives it
// once per change, not once per poll. The returned map must not be modified.
func (a *Agent) ConfigMap(ctx context.Context, namespace, name string) (map[string]string, error) {
	if validName(namespace) != nil || validName(name) != nil {
		return nil, fmt.Errorf("configmap %q/%q: not valid names", namespace, name)
	}
	key := namespace + "/" + name
	var held *configCopy
	if v, ok := a.configs.Load(key); ok {
		held = v.(*configCopy)
	}
	etag := ""
	if held != nil {
		etag = held.etag
	}
	var out *configCopy
	err := a.tr.exchange(ctx, "GET", "/api/v1/namespaces/"+namespace+"/configmaps/"+name, "", nil, etag, 0, func(resp *http.Response, v jval) error {
		if v == nil { // 304: unchanged
			out = held
			return nil
		}
		c := &configCopy{etag: resp.Header.Get("ETag"), data: map[string]string{}}
		var bad error
		v.get("data").each(func(k, val jval) bool {
			key, ok1 := k.str()
			s, ok2 := val.str()
			if !ok1 || !ok2 {
				bad = errors.New("data holds a value that is not a string")
				return false
			}
			c.data[key] = s
			return true
		})
		out = c
		return bad
	})
	if err != nil {
		return nil, fmt.Errorf("reading configmap %s: %w", key, err)
	}
	if out == nil {
		return nil, fmt.Errorf("reading configmap %s: 304 Not Modified for a copy the agent does not hold", key)
	}
	a.configs.Store(key, out)
	return out.data, nil
}
