package device

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/")

// t0 is the fixed clock of the golden bodies.
var t0 = time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)

func testSpec() *nodeSpec {
	return &nodeSpec{name: "pico-1", board: "rp2040", instanceType: "rp2040-pico", cpu: "1", memory: "264Ki",
		pods: 4, version: DefaultVersion, bootID: "5e1f0c2a9b3d4e77"}
}

func testNodeStatus() *nodeStatus {
	st := &nodeStatus{ip: "127.0.0.11", conds: newConditions(t0.Add(-time.Minute))}
	return st
}

const testNodeUID = "0b6c1a3e-7d2f-4f6e-9a51-2c8d3e4f5a60"
const testPodUID = "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a"

func testPodStatus() *podStatus {
	start := t0.Add(-30 * time.Second)
	return &podStatus{
		uid: testPodUID, phase: "Running", ip: "127.0.0.11", startTime: start,
		conds: []condition{
			{typ: "PodScheduled", status: "True", transition: start},
			{typ: "Initialized", status: "True", transition: start},
			{typ: "ContainersReady", status: "True", transition: t0},
			{typ: "Ready", status: "True", transition: t0},
		},
		containers: []ctrStatus{{
			name: "blink", image: BlinkImage, imageID: "picogate://" + BlinkImage,
			containerID: "picogate://9d8c7b6a-blink-0", ready: true, started: true,
			state: ctrState{kind: 'r', startedAt: t0},
		}},
	}
}

// requestBodies are the bodies the agent sends, built from fixed inputs.
func requestBodies() map[string][]byte {
	spec, st := testSpec(), testNodeStatus()
	failed := testPodStatus()
	failed.phase = "Failed"
	failed.conds[2] = condition{typ: "ContainersReady", status: "False", reason: "PodCompleted", transition: t0}
	failed.conds[3] = condition{typ: "Ready", status: "False", reason: "PodCompleted", transition: t0}
	failed.containers[0].ready, failed.containers[0].started = false, false
	failed.containers[0].state = ctrState{kind: 't', exitCode: 1, reason: "Error", message: "sensor \"bus\" not found\n",
		startedAt: t0.Add(-10 * time.Second), finishedAt: t0, containerID: "picogate://9d8c7b6a-blink-0"}
	waiting := testPodStatus()
	waiting.phase = "Pending"
	waiting.conds[2] = condition{typ: "ContainersReady", status: "False", reason: "ContainersNotReady", message: "containers with unready status: [app]", transition: t0}
	waiting.conds[3] = condition{typ: "Ready", status: "False", reason: "ContainersNotReady", message: "containers with unready status: [app]", transition: t0}
	waiting.containers[0] = ctrStatus{name: "app", image: "nginx:1.27", state: ctrState{kind: 'w', reason: "ImageNotBuiltIn",
		message: `image "nginx:1.27" is not built into device pico-1; built-in apps: picogate.io/apps/blink, picogate.io/apps/sensor`}}
	return map[string][]byte{
		"node-create.json":        appendNodeCreate(nil, spec, st, t0),
		"node-labels-patch.json":  appendNodeLabelsPatch(nil, spec),
		"node-status-patch.json":  appendNodeStatusPatch(nil, spec, st, t0, false),
		"node-status-full.json":   appendNodeStatusPatch(nil, spec, st, t0, true),
		"lease-create.json":       appendLeaseCreate(nil, "pico-1", testNodeUID, 40*time.Second, t0),
		"lease-renew.json":        appendLeasePatch(nil, "pico-1", testNodeUID, 40*time.Second, t0, false),
		"lease-renew-owner.json":  appendLeasePatch(nil, "pico-1", testNodeUID, 40*time.Second, t0, true),
		"pod-status-running.json": appendPodStatusPatch(nil, testPodStatus()),
		"pod-status-failed.json":  appendPodStatusPatch(nil, failed),
		"pod-status-waiting.json": appendPodStatusPatch(nil, waiting),
		"pod-delete-options.json": appendDeleteOptions(nil, testPodUID),
	}
}

func TestRequestBodiesGolden(t *testing.T) {
	for name, body := range requestBodies() {
		t.Run(name, func(t *testing.T) {
			if !json.Valid(body) {
				t.Fatalf("body is not valid JSON: %s", body)
			}
			var pretty bytes.Buffer
			if err := json.Indent(&pretty, body, "", "  "); err != nil {
				t.Fatal(err)
			}
			pretty.WriteByte('\n')
			golden := filepath.Join("testdata", "requests", name)
			if *update {
				if err := os.WriteFile(golden, pretty.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("reading golden file (run with -update to create): %v", err)
			}
			if !bytes.Equal(pretty.Bytes(), want) {
				t.Errorf("got body\n%s\nwant (%s)\n%s", pretty.Bytes(), golden, want)
			}
		})
	}
}

// TestRequestBodiesFitFirmwareBuffer checks the bodies a C firmware would
// copy fit in the reference firmware's 2048-byte request buffer with room for
// headers, as docs/device-protocol.md promises.
func TestRequestBodiesFitFirmwareBuffer(t *testing.T) {
	const budget = 2048 - 400 // request line and headers of a token-mode request
	for name, body := range requestBodies() {
		if len(body) > budget {
			t.Errorf("%s: got %d bytes, want at most %d", name, len(body), budget)
		}
	}
}

func TestAppendStrMatchesEncodingJSON(t *testing.T) {
	for _, s := range []string{"", "plain", `q"uote\back`, "tab\tnl\nctl\x01\x1f", "ünïcödé ✓", "bad\xffutf8", "<html>&"} {
		got := appendStr(nil, s)
		var back string
		if err := json.Unmarshal(got, &back); err != nil {
			t.Errorf("appendStr(%q) = %s: not JSON: %v", s, got, err)
			continue
		}
		want := s
		if !json.Valid([]byte(`"`+s+`"`)) || bytes.ContainsRune([]byte(s), 0xfffd) {
			want = string(bytes.ToValidUTF8([]byte(s), []byte("\ufffd")))
		}
		if back != want {
			t.Errorf("appendStr(%q) decodes to %q, want %q", s, back, want)
		}
	}
}
