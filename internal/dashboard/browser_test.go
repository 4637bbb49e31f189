package dashboard

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromiumPath is Debian's chromium, installed by scripts/install-test-deps.sh (make test runs it).
const chromiumPath = "/usr/bin/chromium"

// newBrowser starts a headless Chromium with a fresh profile for the test and returns a tab's context.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("%s not found: run scripts/install-test-deps.sh (make test does)", chromiumPath)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1500, 640),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1500, 640)); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return ctx
}

// rowState is what the test reads of one row of the fleet table, from the DOM.
type rowState struct {
	Status, Ready, Quiet string
	UA, Seen, Name       string
	Pods, Errors         string
	HasElement           bool // an element other than the name link inside a cell: device text became markup
}

const rowsJS = `(() => { const o = {};
  for (const tr of document.querySelectorAll('#fleet-body tr')) {
    const c = (k) => tr.querySelector('td[data-col="' + k + '"]');
    o[tr.dataset.name] = { Status: tr.dataset.status || '', Ready: tr.dataset.ready || '', Quiet: tr.dataset.quiet || '',
      UA: c('ua').textContent, Seen: c('seen').textContent, Name: c('name').textContent,
      Pods: c('pods').textContent, Errors: c('errors').textContent,
      HasElement: tr.querySelectorAll('td:not([data-col="name"]) *').length > 0 || c('name').children.length !== 1 };
  }
  return JSON.stringify(o); })()`

func readRows(t *testing.T, ctx context.Context) map[string]rowState {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](rowsJS))
	if err != nil {
		t.Fatalf("reading the table: %v", err)
	}
	out := map[string]rowState{}
	if err := json.Unmarshal([]byte(s), &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// waitRows polls the table until ok accepts it or timeout passes; it returns how long that took.
func waitRows(t *testing.T, ctx context.Context, what string, timeout time.Duration, ok func(map[string]rowState) bool) time.Duration {
	t.Helper()
	start := time.Now()
	var last map[string]rowState
	for time.Since(start) < timeout {
		if last = readRows(t, ctx); ok(last) {
			return time.Since(start)
		}
		time.Sleep(50 * time.Millisecond) // polling the DOM, not waiting for the condition
	}
	screenshot(t, ctx, "dashboard-failure.png")
	t.Fatalf("%s: not within %v; the table: %+v", what, timeout, last)
	return 0
}

// artifactDir is tmp/ at the repository root (git-ignored): screenshots are kept there.
func artifactDir(t *testing.T) string {
	t.Helper()
	wd, _ := os.Getwd()
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			dir := filepath.Join(d, "tmp")
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			return dir
		}
		if filepath.Dir(d) == d {
			t.Fatalf("no go.mod above %s", wd)
		}
	}
}

func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Logf("screenshot %s: %v", name, err)
		return
	}
	p := filepath.Join(artifactDir(t), name)
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", p)
}

// hostileUA tries every way a string could become markup or script if it were rendered as HTML.
const hostileUA = `"'><img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script><b>bold</b>`

// TestPageInBrowser loads the page from an in-process dashboard in headless Chromium: the rows render,
// hostile device strings show as text, nothing runs, and the CSP lets the page work.
func TestPageInBrowser(t *testing.T) {
	clk := &clock{t: time.Now()}
	reg := newMemRegistry()
	for i := range 12 {
		reg.set(tokenDevice(fmt.Sprintf("pico-%02d", i)))
	}
	rev := tokenDevice("pico-rev")
	rev.Revoked = clk.now()
	reg.set(rev)
	d, err := New(Config{Registry: reg, Tick: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 12 {
		e := ev(fmt.Sprintf("pico-%02d", i), time.Now(), 200)
		if i == 3 {
			e.UserAgent = hostileUA
			e.Path = "/api/v1/nodes/<img src=x onerror=window.__pwned=3>"
			e.Status, e.Reason, e.Rule = 403, `no rule allows "<script>window.__pwned=4</script>"`, "none"
		}
		d.Record(e)
	}
	srv := httptest.NewServer(d.Handler())
	t.Cleanup(srv.Close) // after the browser has gone (cleanups run last first), so its stream has ended
	ctx := newBrowser(t)
	if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL+"/")); err != nil {
		t.Fatal(err)
	}
	waitRows(t, ctx, "13 rows", 10*time.Second, func(r map[string]rowState) bool { return len(r) == 13 })
	screenshot(t, ctx, "dashboard-unit-fleet.png")
	got := readRows(t, ctx)
	if r := got["pico-03"]; r.UA != hostileUA || r.HasElement {
		t.Errorf("hostile user agent: got %q (markup: %v), want it verbatim as text", r.UA, r.HasElement)
	}
	if got["pico-rev"].Status != "revoked" || got["pico-00"].Status != "active" {
		t.Errorf("status: got %+v and %+v", got["pico-rev"], got["pico-00"])
	}

	// The device page of the hostile device.
	if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL+"/#/device/pico-03")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	var path string
	for time.Now().Before(deadline) && !strings.Contains(path, "<img") {
		path, _ = chromedp.Run(ctx, chromedp.Evaluate[string](`(document.querySelector('#d-refusals tbody tr td:nth-child(3)') || {}).textContent || ''`))
		time.Sleep(50 * time.Millisecond)
	}
	if path != "/api/v1/nodes/<img src=x onerror=window.__pwned=3>" {
		t.Errorf("refused path: got %q, want it as text", path)
	}
	commands, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById('d-commands').textContent`))
	if !strings.Contains(commands, "picogate device revoke pico-03") {
		t.Errorf("commands: got %q, want picogate device revoke pico-03 among them", commands)
	}
	pwned, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.__pwned !== undefined || document.querySelectorAll('#device-view img, #device-view script, #device-view b, #fleet-body img').length > 0`))
	if err != nil || pwned {
		t.Errorf("device strings became markup or script (err %v)", err)
	}
	screenshot(t, ctx, "dashboard-unit-device.png")
}
