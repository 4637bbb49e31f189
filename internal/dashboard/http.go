package dashboard

import (
	"bytes"
	"embed"
	"encoding/json"
	"io/fs"
	"net/http"
	"path"
	"time"
)

//go:embed assets
var assets embed.FS

// Prefix is where the dashboard's files and data are served; the page itself is at "/" of the admin port.
const Prefix = "/dashboard/"

// securityHeaders are on every response: no script or style but the page's own files, no framing, no
// referrer, no sniffing. The page has no inline script or style, so 'self' is all it needs.
func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "+
			"frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("Cross-Origin-Resource-Policy", "same-origin")
		h.ServeHTTP(w, r)
	})
}

// Register adds the dashboard to the admin port's mux: the page at "/" and its files and data under
// Prefix. Every route is read-only (GET).
func (d *Dashboard) Register(mux *http.ServeMux) {
	h := d.Handler()
	mux.Handle("GET /{$}", h)
	mux.Handle("GET "+Prefix, h)
}

// Handler serves the page, its assets and its data.
func (d *Dashboard) Handler() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(assets, "assets")
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { serveAsset(w, r, static, "index.html") })
	mux.HandleFunc("GET "+Prefix+"assets/{file}", func(w http.ResponseWriter, r *http.Request) { serveAsset(w, r, static, r.PathValue("file")) })
	mux.HandleFunc("GET "+Prefix+"api/fleet", d.serveFleet)
	mux.HandleFunc("GET "+Prefix+"api/stream", d.serveStream)
	mux.HandleFunc("GET "+Prefix+"api/device/{name}", d.serveDevice)
	mux.HandleFunc("GET "+Prefix+"api/anonymous", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, d.Anonymous()) })
	mux.HandleFunc("GET "+Prefix+"api/charts", d.serveCharts)
	return securityHeaders(mux)
}

var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
}

func serveAsset(w http.ResponseWriter, r *http.Request, static fs.FS, name string) {
	b, err := fs.ReadFile(static, name)
	ct, ok := contentTypes[path.Ext(name)]
	if err != nil || !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Cache-Control", "no-cache")
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(b))
}

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v) // escapes <, > and & too: device strings stay inert even if misread as HTML
	if err != nil {
		http.Error(w, "encoding: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(b)
}

func (d *Dashboard) serveFleet(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, d.snapshot().page(ParseQuery(r.URL.Query())))
}

func (d *Dashboard) serveDevice(w http.ResponseWriter, r *http.Request) {
	v, ok := d.Device(r.PathValue("name"))
	if !ok {
		w.Header().Set("Cache-Control", "no-store")
		http.Error(w, "no such device", http.StatusNotFound)
		return
	}
	writeJSON(w, v)
}

// Charts is the fleet charts' data.
type Charts struct {
	IntervalSeconds float64 `json:"interval"`
	Points          []Point `json:"points"`
}

func (d *Dashboard) serveCharts(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, Charts{IntervalSeconds: d.cfg.Interval.Seconds(), Points: d.history.snapshot()})
}
