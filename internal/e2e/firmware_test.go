package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// firmwareResponse is what the reference firmware's 4096-byte receive buffer holds after a request.
type firmwareResponse struct {
	raw      []byte // headers and body, at most 4095 bytes, as the firmware keeps them
	overflow bool   // more arrived than fits
	code     int
	headers  map[string]string
	body     string
}

// firmwareDo sends one request exactly as the reference firmware does (../shared/notes/firmware-wire.md):
// a new TCP connection, HTTP/1.1, headers in its order, Connection: close, and for a body Content-Type and
// Content-Length; extra is the one header token mode adds. It reads into one 4096-byte buffer.
func firmwareDo(t testing.TB, addr, localIP, method, path, ctype, body, extra string) firmwareResponse {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if localIP != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(localIP)}
	}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer conn.Close()
	host, _, _ := net.SplitHostPort(addr)
	var req bytes.Buffer
	fmt.Fprintf(&req, "%s %s HTTP/1.1\r\nHost: %s:6080\r\nUser-Agent: k3s-pico-node/1.0\r\nAccept: application/json\r\nConnection: close\r\n", method, path, host)
	if extra != "" {
		req.WriteString(extra + "\r\n")
	}
	if body != "" {
		fmt.Fprintf(&req, "Content-Type: %s\r\nContent-Length: %d\r\n", ctype, len(body))
	}
	req.WriteString("\r\n" + body)
	if req.Len() > 2048 {
		t.Fatalf("request of %d bytes does not fit the firmware's 2048-byte buffer", req.Len())
	}
	_ = conn.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := conn.Write(req.Bytes()); err != nil {
		t.Fatalf("write: %v", err)
	}
	all, err := io.ReadAll(conn)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if !bytes.Contains(all, []byte("\r\n\r\n")) {
		t.Fatalf("no header end in %q", all)
	}
	r := parseResponse(all)
	if r.overflow = len(all) > 4095; r.overflow {
		r.raw = all[:4095]
	}
	return r
}

// parseResponse splits a raw HTTP/1.1 response into status code, lower-cased headers and body.
func parseResponse(all []byte) firmwareResponse {
	r := firmwareResponse{raw: all, headers: map[string]string{}}
	head, rest, _ := strings.Cut(string(all), "\r\n\r\n")
	lines := strings.Split(head, "\r\n")
	if f := strings.Fields(lines[0]); len(f) >= 2 {
		r.code, _ = strconv.Atoi(f[1])
	}
	for _, l := range lines[1:] {
		k, v, _ := strings.Cut(l, ":")
		r.headers[strings.ToLower(k)] = strings.TrimSpace(v)
	}
	r.body = rest
	return r
}

// firmwareNode is the ~1.6 KB Node the reference firmware POSTs at boot.
func firmwareNode(t testing.TB, name, ip string) string {
	t.Helper()
	b, err := os.ReadFile("testdata/firmware-node.json")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Format(time.RFC3339)
	return strings.NewReplacer("@NAME@", name, "@IP@", ip, "@TIME@", now).Replace(strings.TrimSpace(string(b)))
}

// firmwareHeartbeat is the strategic-merge status PATCH the firmware sends every 10 s.
func firmwareHeartbeat(ip string) string {
	now := time.Now().UTC().Format(time.RFC3339)
	var conds []string
	for _, c := range [][3]string{{"Ready", "True", "KubeletReady"}, {"MemoryPressure", "False", "KubeletHasSufficientMemory"}, {"DiskPressure", "False", "KubeletHasNoDiskPressure"}, {"PIDPressure", "False", "KubeletHasSufficientPID"}, {"NetworkUnavailable", "False", "RouteCreated"}} {
		conds = append(conds, fmt.Sprintf(`{"type":"%s","status":"%s","reason":"%s","lastHeartbeatTime":"%s","lastTransitionTime":"%s"}`, c[0], c[1], c[2], now, now))
	}
	return fmt.Sprintf(`{"status":{"conditions":[%s],"addresses":[{"type":"InternalIP","address":"%s"}]}}`, strings.Join(conds, ","), ip)
}

// checkFirmwareFits asserts a response is complete and readable by the reference firmware.
func checkFirmwareFits(t testing.TB, what string, r firmwareResponse) {
	t.Helper()
	if r.overflow {
		t.Errorf("%s: got %d+ bytes, want the whole response within 4096", what, len(r.raw))
	}
	if r.headers["transfer-encoding"] != "" {
		t.Errorf("%s: got Transfer-Encoding %q, want none (the firmware cannot decode chunks)", what, r.headers["transfer-encoding"])
	}
	if cl, err := strconv.Atoi(r.headers["content-length"]); err != nil || cl != len(r.body) {
		t.Errorf("%s: got Content-Length %q for a %d-byte body, want them equal", what, r.headers["content-length"], len(r.body))
	}
	if strings.Contains(r.body, "managedFields") {
		t.Errorf("%s: got managedFields in the body, want them removed", what)
	}
	if r.headers["date"] == "" {
		t.Errorf("%s: got no Date header, want one (the firmware sets its clock from it)", what)
	}
	for k := range r.headers {
		if strings.HasPrefix(k, "x-kubernetes-pf-") {
			t.Errorf("%s: got header %s, want it dropped", what, k)
		}
	}
}

// firmwareSequence runs the firmware's boot and first heartbeat cycle and checks every response, then
// reads the device's Node as a registered device may (firmwareBoot is the firmware's requests alone).
func firmwareSequence(t *testing.T, addr, localIP, name, extra string) {
	t.Helper()
	firmwareBoot(t, addr, localIP, name, extra)
	r := firmwareDo(t, addr, localIP, "GET", "/api/v1/nodes/"+name, "", "", extra)
	if r.code != 200 {
		t.Fatalf("GET node: got %d, want 200", r.code)
	}
	checkFirmwareFits(t, "GET node", r)
	t.Logf("GET node through picogate: %d bytes with headers (%d body)", len(r.raw), len(r.body))
}

// firmwareBoot sends exactly the reference firmware's three kinds of request: its Node create at boot,
// two status heartbeats and its ConfigMap read, and checks every response.
func firmwareBoot(t *testing.T, addr, localIP, name, extra string) {
	t.Helper()
	ip := localIP
	if ip == "" {
		ip = "127.0.0.1"
	}
	r := firmwareDo(t, addr, localIP, "POST", "/api/v1/nodes", "application/json", firmwareNode(t, name, ip), extra)
	if r.code != 201 && r.code != 409 {
		t.Fatalf("POST node: got %d %s, want 201 (or 409)", r.code, r.body)
	}
	checkFirmwareFits(t, "POST node", r)
	for i := range 2 {
		r = firmwareDo(t, addr, localIP, "PATCH", "/api/v1/nodes/"+name+"/status", "application/strategic-merge-patch+json", firmwareHeartbeat(ip), extra)
		if r.code != 200 {
			t.Fatalf("PATCH status %d: got %d %s, want 200", i, r.code, r.body)
		}
		checkFirmwareFits(t, "PATCH status", r)
	}
	r = firmwareDo(t, addr, localIP, "GET", "/api/v1/namespaces/default/configmaps/pico-config", "", "", extra)
	if r.code != 200 {
		t.Fatalf("GET configmap: got %d %s, want 200", r.code, r.body)
	}
	checkFirmwareFits(t, "GET configmap", r)
	if !strings.Contains(r.body, `"memory_values"`) {
		t.Errorf("GET configmap: got %s, want data.memory_values", r.body)
	}
}

// rawRequest sends an arbitrary request on a new connection with the given User-Agent (the marker the
// audit log is searched for) and extra header lines, and reads the whole response. A body is sent as
// application/json unless the headers give a Content-Type.
func rawRequest(t testing.TB, addr, localIP, method, path, ua string, headers []string, body string) firmwareResponse {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if localIP != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(localIP)}
	}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	var req bytes.Buffer
	fmt.Fprintf(&req, "%s %s HTTP/1.1\r\nHost: picogate\r\nUser-Agent: %s\r\nConnection: close\r\n", method, path, ua)
	ctype := "Content-Type: application/json\r\n"
	for _, h := range headers {
		req.WriteString(h + "\r\n")
		if k, _, _ := strings.Cut(h, ":"); strings.EqualFold(k, "Content-Type") {
			ctype = ""
		}
	}
	if body != "" {
		fmt.Fprintf(&req, "%sContent-Length: %d\r\n", ctype, len(body))
	}
	req.WriteString("\r\n" + body)
	_ = conn.SetDeadline(time.Now().Add(15 * time.Second))
	_, _ = conn.Write(req.Bytes())
	all, _ := io.ReadAll(conn)
	return parseResponse(all)
}
