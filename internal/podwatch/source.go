package podwatch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"

	"github.com/picogate/picogate/internal/compact"
)

// Source opens the gateway's own GET of /api/v1/pods with query — a list, or a watch when query has
// watch=1 — and returns the API server's JSON answer. An answer other than 200 is an error the API
// machinery recognises (apierrors: a 410 makes the reflector list again, a 403 says the gateway's RBAC
// lacks pods list/watch).
type Source func(ctx context.Context, query url.Values) (io.ReadCloser, error)

// RESTSource is a Source over a client-go REST client of the core API group (the gateway's own
// credential): clientset.CoreV1().RESTClient().
func RESTSource(c rest.Interface) Source {
	return func(ctx context.Context, query url.Values) (io.ReadCloser, error) {
		req := c.Get().AbsPath("/api/v1/pods").SetHeader("Accept", "application/json")
		for k, vs := range query {
			for _, v := range vs {
				req = req.Param(k, v)
			}
		}
		return req.Stream(ctx)
	}
}

// object is one pod as the API server sent it: its JSON (compacted, see doc) and the few fields the hub
// reads. It is a runtime.Object so a client-go reflector can carry it; its ObjectMeta holds only name,
// namespace and resourceVersion.
type object struct {
	metav1.TypeMeta
	metav1.ObjectMeta
	node string
	raw  []byte // never modified once made
}

func (o *object) DeepCopyObject() runtime.Object { c := *o; return &c }

// objectList is a page of a pod list, for the reflector.
type objectList struct {
	metav1.TypeMeta
	metav1.ListMeta
	Items []object
}

func (l *objectList) DeepCopyObject() runtime.Object {
	c := *l
	c.Items = append([]object(nil), l.Items...)
	return &c
}

// podHead is what the hub reads of a pod.
type podHead struct {
	Kind     string `json:"kind"`
	Metadata struct {
		Name            string `json:"name"`
		Namespace       string `json:"namespace"`
		ResourceVersion string `json:"resourceVersion"`
	} `json:"metadata"`
	Spec struct {
		NodeName string `json:"nodeName"`
	} `json:"spec"`
}

// podPrefix starts a pod as the API server sends it in a watch event. A list's items have no kind or
// apiVersion; an event's object has both, first.
const podPrefix = `{"kind":"Pod","apiVersion":"v1",`

// newObject makes an object of a pod's JSON as the API server sent it (in a list or an event).
func newObject(b []byte) (*object, error) {
	var h podHead
	if err := json.Unmarshal(b, &h); err != nil {
		return nil, fmt.Errorf("decoding a pod: %w", err)
	}
	raw, err := compact.Append(make([]byte, 0, len(b)+len(podPrefix)), b)
	if err != nil {
		return nil, fmt.Errorf("compacting a pod: %w", err)
	}
	if h.Kind == "" && len(raw) > 2 && raw[0] == '{' {
		raw = append([]byte(podPrefix), raw[1:]...)
	}
	o := &object{node: h.Spec.NodeName, raw: raw[:len(raw):len(raw)]}
	o.Name, o.Namespace, o.ResourceVersion = h.Metadata.Name, h.Metadata.Namespace, h.Metadata.ResourceVersion
	return o, nil
}

// listerWatcher lists and watches pods through a Source for a client-go reflector, and tells the hub
// whether its view of the API server is whole (up) or not.
type listerWatcher struct {
	src      Source
	selector string
	up       func(bool, error)
}

// IsWatchListSemanticsUnSupported keeps the reflector on list-then-watch: the objects here are raw.
func (lw *listerWatcher) IsWatchListSemanticsUnSupported() bool { return true }

func (lw *listerWatcher) List(opts metav1.ListOptions) (runtime.Object, error) {
	return lw.ListWithContext(context.Background(), opts)
}

func (lw *listerWatcher) Watch(opts metav1.ListOptions) (watch.Interface, error) {
	return lw.WatchWithContext(context.Background(), opts)
}

func (lw *listerWatcher) query(opts metav1.ListOptions) url.Values {
	q := url.Values{"fieldSelector": {lw.selector}}
	if opts.ResourceVersion != "" {
		q.Set("resourceVersion", opts.ResourceVersion)
	}
	if opts.ResourceVersionMatch != "" {
		q.Set("resourceVersionMatch", string(opts.ResourceVersionMatch))
	}
	if opts.Limit > 0 {
		q.Set("limit", strconv.FormatInt(opts.Limit, 10))
	}
	if opts.Continue != "" {
		q.Set("continue", opts.Continue)
	}
	return q
}

func (lw *listerWatcher) ListWithContext(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
	body, err := lw.src(ctx, lw.query(opts))
	if err != nil {
		lw.up(false, err)
		return nil, err
	}
	defer body.Close()
	var page struct {
		Metadata metav1.ListMeta   `json:"metadata"`
		Items    []json.RawMessage `json:"items"`
	}
	if err := json.NewDecoder(body).Decode(&page); err != nil {
		err = fmt.Errorf("decoding the pod list: %w", err)
		lw.up(false, err)
		return nil, err
	}
	l := &objectList{ListMeta: page.Metadata, Items: make([]object, 0, len(page.Items))}
	for _, it := range page.Items {
		o, err := newObject(it)
		if err != nil {
			lw.up(false, err)
			return nil, err
		}
		l.Items = append(l.Items, *o)
	}
	return l, nil
}

func (lw *listerWatcher) WatchWithContext(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	q := lw.query(opts)
	q.Set("watch", "1")
	if opts.AllowWatchBookmarks {
		q.Set("allowWatchBookmarks", "true")
	}
	if opts.TimeoutSeconds != nil {
		q.Set("timeoutSeconds", strconv.FormatInt(*opts.TimeoutSeconds, 10))
	}
	body, err := lw.src(ctx, q)
	if err != nil {
		lw.up(false, err)
		return nil, err
	}
	lw.up(true, nil)
	return watch.NewStreamWatcher(&decoder{body: body, dec: json.NewDecoder(body), up: lw.up},
		apierrors.NewClientErrorReporter(http.StatusInternalServerError, http.MethodGet, "ClientWatchDecoding")), nil
}

// decoder reads the API server's watch events for a watch.StreamWatcher.
type decoder struct {
	body io.ReadCloser
	dec  *json.Decoder
	up   func(bool, error)
}

func (d *decoder) Decode() (watch.EventType, runtime.Object, error) {
	var ev struct {
		Type   watch.EventType `json:"type"`
		Object json.RawMessage `json:"object"`
	}
	if err := d.dec.Decode(&ev); err != nil {
		if !errors.Is(err, io.EOF) {
			d.up(false, fmt.Errorf("reading the pod watch: %w", err))
		}
		return "", nil, err
	}
	switch ev.Type {
	case watch.Error:
		st := &metav1.Status{}
		if err := json.Unmarshal(ev.Object, st); err != nil {
			return "", nil, fmt.Errorf("decoding a watch error: %w", err)
		}
		st.SetGroupVersionKind(schema.GroupVersionKind{Version: "v1", Kind: "Status"})
		return ev.Type, st, nil
	case watch.Added, watch.Modified, watch.Deleted, watch.Bookmark:
		o, err := newObject(ev.Object)
		if err != nil {
			d.up(false, err)
			return "", nil, err
		}
		return ev.Type, o, nil
	default:
		err := fmt.Errorf("pod watch event of unknown type %q", ev.Type)
		d.up(false, err)
		return "", nil, err
	}
}

func (d *decoder) Close() { _ = d.body.Close() }
