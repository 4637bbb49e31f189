package sim

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/picogate/picogate/device"
)

// The reference firmware's fixed sizes (shared/notes/firmware-wire.md).
const (
	firmwareRequestBuffer = 2048
	firmwareUserAgent     = "k3s-pico-node/1.0"
	firmwareIOTimeout     = 10 * time.Second
)

// firmwareDevice behaves on the wire exactly like the reference firmware: a
// new TCP connection per request, HTTP/1.1 written by hand with its headers
// in its order, a POST of its Node at boot (409 is fine), a status PATCH
// every 10 s, a GET of ConfigMap default/pico-config every 30 s, no Lease,
// and each response read into one 4096-byte buffer.
type firmwareDevice struct {
	name, host, token string
	signer            *device.HMACSigner // hmac mode: a firmware that signs its requests
	src               netip.Addr
	dial              func(ctx context.Context, network, addr string) (net.Conn, error)
	statusEvery       time.Duration
	configEvery       time.Duration
	useETag           bool   // send If-None-Match with the ConfigMap's last ETag
	etag              string // that ETag

	mu     sync.Mutex // guards r and lastOK
	r      DeviceReport
	lastOK time.Time // last successful status PATCH (or POST)

	boot      time.Time // from the first Date header, like the board's clock
	dateAt    time.Time // local time the last Date header was read
	date      time.Time // that Date header
	resp      [FirmwareBuffer]byte
	req       []byte
	addrLabel string
}

func newFirmware(cfg Config, c Credential) (*firmwareDevice, error) {
	u, err := url.Parse(cfg.Gateway)
	if err != nil {
		return nil, fmt.Errorf("device %q: %w", c.Name, err)
	}
	src, err := c.sourceIP()
	if err != nil {
		return nil, fmt.Errorf("device %q: %w", c.Name, err)
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), map[bool]string{true: "443", false: "80"}[u.Scheme == "https"])
	}
	key, err := c.key()
	if err != nil {
		return nil, fmt.Errorf("device %q: %w", c.Name, err)
	}
	f := &firmwareDevice{
		name: c.Name, host: host, token: c.Token, src: src,
		dial:        tlsDialer(dialer(src, firmwareIOTimeout), deviceTLS(cfg.TLS, u.Hostname())),
		statusEvery: cfg.FirmwareStatusInterval,
		configEvery: cfg.FirmwareConfigInterval,
		useETag:     cfg.FirmwareETag,
		req:         make([]byte, 0, firmwareRequestBuffer),
		r:           DeviceReport{Name: c.Name, Errors: map[string]uint64{}},
	}
	if key != nil {
		// A firmware that signs, on the board's clock (set from the gateway's Date headers).
		f.signer = &device.HMACSigner{Name: c.Name, Key: key, Now: f.now}
	}
	f.addrLabel = "192.168.1.50"
	if src.IsValid() {
		f.addrLabel = src.String()
	}
	return f, nil
}

// Run is the firmware's main loop: register until the POST is answered 201
// or 409, then the two periodic requests.
func (f *firmwareDevice) Run(ctx context.Context) error {
	registered := false
	statusT := time.NewTicker(f.statusEvery)
	defer statusT.Stop()
	var configT *time.Ticker
	var configC <-chan time.Time
	for {
		if !registered {
			code, err := f.send(ctx, "POST", "/api/v1/nodes", "application/json", f.nodeBody())
			if err == nil && (code == http.StatusCreated || code == http.StatusConflict || code == http.StatusOK) {
				registered = true
				f.markOK()
				configT = time.NewTicker(f.configEvery)
				defer configT.Stop()
				configC = configT.C
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-statusT.C:
			if registered {
				if code, err := f.send(ctx, "PATCH", "/api/v1/nodes/"+f.name+"/status", "application/strategic-merge-patch+json", f.statusBody()); err == nil && code == http.StatusOK {
					f.markOK()
				}
			}
		case <-configC:
			f.getConfig(ctx)
		}
	}
}

func (f *firmwareDevice) markOK() {
	f.mu.Lock()
	f.lastOK = time.Now()
	f.r.StatusPatches++
	f.mu.Unlock()
}

func (f *firmwareDevice) getConfig(ctx context.Context) {
	var extra string
	if f.useETag && f.etag != "" {
		extra = "If-None-Match: " + f.etag
	}
	code, etag, err := f.sendExtra(ctx, "GET", "/api/v1/namespaces/default/configmaps/pico-config", "", nil, extra)
	if err == nil && code == http.StatusNotModified && extra != "" {
		return // unchanged: the values already applied stay
	}
	if err != nil || code != http.StatusOK {
		return
	}
	if f.useETag {
		f.etag = etag
	}
	// The firmware finds data.memory_values by substring search.
	body := f.resp[:]
	if i := bytes.Index(body, []byte(`"memory_values":"`)); i >= 0 {
		v := body[i+len(`"memory_values":"`):]
		if j := bytes.IndexByte(v, '"'); j >= 0 {
			f.count(func(r *DeviceReport) { r.ConfigValues = string(v[:j]) })
		}
	}
}

// Snapshot reports the device's counters. Ready means a status update was
// accepted within two periods: the node lifecycle controller's view, since
// this firmware writes no Lease.
func (f *firmwareDevice) Snapshot() DeviceReport {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.r
	r.Errors = make(map[string]uint64, len(f.r.Errors))
	for k, v := range f.r.Errors {
		r.Errors[k] = v
	}
	r.Ready = !f.lastOK.IsZero() && time.Since(f.lastOK) < 2*f.statusEvery
	return r
}

func (f *firmwareDevice) count(fn func(r *DeviceReport)) {
	f.mu.Lock()
	fn(&f.r)
	f.mu.Unlock()
}

func (f *firmwareDevice) fail(kind, msg string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.r.Errors[kind]++
	f.r.LastError = msg
	f.r.LastErrorAt = time.Now()
}

// send writes one request on a new connection and reads the answer as the
// firmware does. It returns the HTTP status code.
//
// Only Run's goroutine calls it, so the buffers need no lock; the counters
// take f.mu since Snapshot reads them.
func (f *firmwareDevice) send(ctx context.Context, method, path, ctype string, body []byte) (int, error) {
	code, _, err := f.sendExtra(ctx, method, path, ctype, body, "")
	return code, err
}

// sendExtra is send with one extra header line (e.g. If-None-Match), placed
// after the others; it also returns the answer's ETag.
func (f *firmwareDevice) sendExtra(ctx context.Context, method, path, ctype string, body []byte, extra string) (int, string, error) {
	if f.signer != nil {
		p, q, _ := strings.Cut(path, "?")
		auth, err := f.signer.Authorization(method, p, q, ctype, body)
		if err != nil {
			return 0, "", err
		}
		f.req = appendFirmwareRequestAuth(f.req[:0], method, path, f.host, auth, ctype, body)
	} else {
		f.req = appendFirmwareRequest(f.req[:0], method, path, f.host, f.token, ctype, body)
	}
	if extra != "" { // before the blank line that ends the headers (GETs carry no body)
		f.req = append(f.req[:len(f.req)-2-len(body)], extra+"\r\n\r\n"...)
	}
	f.count(func(r *DeviceReport) { r.Requests++ })
	if len(f.req) > firmwareRequestBuffer {
		f.fail("request-too-large", fmt.Sprintf("%s %s: %d bytes do not fit the %d-byte request buffer", method, path, len(f.req), firmwareRequestBuffer))
		return 0, "", errors.New("request too large")
	}
	run := ctx
	ctx, cancel := context.WithTimeout(ctx, firmwareIOTimeout)
	defer cancel()
	conn, err := f.dial(ctx, "tcp", f.host)
	if err != nil {
		// A refusal or the board's own I/O timeout is an error; a dial cut short because the run
		// ended (its --duration or Ctrl-C) is not the gateway's doing.
		if run.Err() == nil {
			f.fail("network", err.Error())
		}
		return 0, "", err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(firmwareIOTimeout)); err != nil {
		f.fail("network", err.Error())
		return 0, "", err
	}
	if _, err := conn.Write(f.req); err != nil {
		f.fail("network", err.Error())
		return 0, "", err
	}
	res, err := readFirmwareResponse(conn, f.resp[:])
	if err != nil {
		f.fail("network", err.Error())
		return 0, "", err
	}
	f.count(func(r *DeviceReport) { r.MaxResponse = max(r.MaxResponse, res.total) })
	if res.total > FirmwareBuffer-1 {
		f.count(func(r *DeviceReport) { r.Oversize++ })
		f.fail("oversize", fmt.Sprintf("%s %s: %d-byte response does not fit the %d-byte buffer", method, path, res.total, FirmwareBuffer))
	}
	if res.chunked {
		f.count(func(r *DeviceReport) { r.Chunked++ })
		f.fail("chunked", fmt.Sprintf("%s %s: chunked response", method, path))
	}
	if res.date != "" {
		f.setClock(res.date)
	}
	if res.code >= 400 {
		snippet := res.body
		if len(snippet) > 200 {
			snippet = snippet[:200]
		}
		f.fail("http-"+strconv.Itoa(res.code), fmt.Sprintf("%s %s: %d %s", method, path, res.code, snippet))
	}
	return res.code, res.etag, nil
}

// setClock keeps the board's notion of time from the Date header, as the
// firmware (no RTC) does.
func (f *firmwareDevice) setClock(date string) {
	t, err := http.ParseTime(date)
	if err != nil {
		return
	}
	f.date, f.dateAt = t, time.Now()
	if f.boot.IsZero() {
		f.boot = t
	}
}

// now is the board's clock: the last Date header plus the time since.
func (f *firmwareDevice) now() time.Time {
	if f.date.IsZero() {
		return time.Now().UTC().Truncate(time.Second)
	}
	return f.date.Add(time.Since(f.dateAt)).UTC().Truncate(time.Second)
}

// appendFirmwareRequest writes the request exactly as the firmware does:
// headers in its order, the Authorization header (token mode only) right
// after Connection: close, then Content-Type and Content-Length for a body.
func appendFirmwareRequest(b []byte, method, path, host, token, ctype string, body []byte) []byte {
	if token != "" {
		token = "Bearer " + token
	}
	return appendFirmwareRequestAuth(b, method, path, host, token, ctype, body)
}

// appendFirmwareRequestAuth is appendFirmwareRequest with the whole Authorization value (a bearer
// token, or a signature from a firmware that signs: hmac mode).
func appendFirmwareRequestAuth(b []byte, method, path, host, auth, ctype string, body []byte) []byte {
	b = append(b, method...)
	b = append(b, ' ')
	b = append(b, path...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, host...)
	b = append(b, "\r\nUser-Agent: "+firmwareUserAgent+"\r\nAccept: application/json\r\nConnection: close\r\n"...)
	if auth != "" {
		b = append(b, "Authorization: "...)
		b = append(b, auth...)
		b = append(b, "\r\n"...)
	}
	if body != nil {
		b = append(b, "Content-Type: "...)
		b = append(b, ctype...)
		b = append(b, "\r\nContent-Length: "...)
		b = strconv.AppendInt(b, int64(len(body)), 10)
		b = append(b, "\r\n"...)
	}
	b = append(b, "\r\n"...)
	return append(b, body...)
}

// firmwareResponse is what the firmware got from one response.
type firmwareResponse struct {
	code    int
	total   int    // bytes the server sent, headers included
	chunked bool   // Transfer-Encoding: chunked
	date    string // Date header
	etag    string // ETag header
	body    []byte // the part of the body that fit in the buffer
}

// readFirmwareResponse reads like the firmware: into buf until the headers
// and Content-Length bytes are in, or the server closes. What does not fit
// in buf (4095 usable) is lost to the firmware; it is still read and counted
// here so the report can say how much was lost.
func readFirmwareResponse(conn io.Reader, buf []byte) (firmwareResponse, error) {
	var res firmwareResponse
	usable := len(buf) - 1
	n, headerEnd, want := 0, -1, -1
	var scratch [4096]byte
	for {
		var m int
		var err error
		if n < usable {
			m, err = conn.Read(buf[n:usable])
			n += m
		} else {
			m, err = conn.Read(scratch[:])
		}
		res.total += m
		if headerEnd < 0 {
			if i := bytes.Index(buf[:n], []byte("\r\n\r\n")); i >= 0 {
				headerEnd = i + 4
				parseFirmwareHeaders(buf[:i], &res)
				if cl := headerValue(buf[:i], "Content-Length"); cl != "" && !res.chunked {
					if v, perr := strconv.Atoi(cl); perr == nil {
						want = headerEnd + v
					}
				}
			}
		}
		if want >= 0 && res.total >= want {
			break
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			if res.total > 0 && headerEnd >= 0 && want < 0 {
				break // server closed abruptly after a body without length
			}
			return res, err
		}
	}
	if headerEnd < 0 {
		return res, fmt.Errorf("response without complete headers (%d bytes)", res.total)
	}
	end := n
	if want >= 0 {
		end = min(n, want)
	}
	res.body = buf[min(headerEnd, end):end]
	return res, nil
}

func parseFirmwareHeaders(h []byte, res *firmwareResponse) {
	line := h
	if i := bytes.Index(h, []byte("\r\n")); i >= 0 {
		line = h[:i]
	}
	if parts := bytes.SplitN(line, []byte(" "), 3); len(parts) >= 2 {
		res.code, _ = strconv.Atoi(string(parts[1]))
	}
	res.chunked = bytes.EqualFold([]byte(headerValue(h, "Transfer-Encoding")), []byte("chunked"))
	res.date = headerValue(h, "Date")
	res.etag = headerValue(h, "ETag")
}

// headerValue finds a header case-insensitively in raw header bytes.
func headerValue(h []byte, name string) string {
	for _, line := range bytes.Split(h, []byte("\r\n")) {
		k, v, ok := bytes.Cut(line, []byte(":"))
		if ok && bytes.EqualFold(bytes.TrimSpace(k), []byte(name)) {
			return string(bytes.TrimSpace(v))
		}
	}
	return ""
}
