package setup

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/picogate/picogate/deploy"
)

var update = flag.Bool("update", false, "rewrite golden files")

func TestRetarget(t *testing.T) {
	objs, err := DecodeManifest(deploy.RBAC())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		ns   string
		want []string // describe() of every object, in manifest order
		sa   string   // namespace of ServiceAccount subjects in both bindings
	}{
		{"picogate-system", []string{"Namespace picogate-system", "ServiceAccount picogate-system/picogate", "ClusterRole picogate-gateway",
			"ClusterRoleBinding picogate-gateway", "Role picogate-system/picogate-registry-reader", "RoleBinding picogate-system/picogate-registry-reader"}, "picogate-system"},
		{"lab", []string{"Namespace lab", "ServiceAccount lab/picogate", "ClusterRole picogate-gateway",
			"ClusterRoleBinding picogate-gateway-lab", "Role lab/picogate-registry-reader", "RoleBinding lab/picogate-registry-reader"}, "lab"},
	}
	for _, tt := range tests {
		t.Run(tt.ns, func(t *testing.T) {
			out, err := Retarget(objs, tt.ns)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, o := range out {
				got = append(got, describe(o))
				if subj, ok, _ := unstructured.NestedSlice(o.Object, "subjects"); ok {
					for _, s := range subj {
						if ns := s.(map[string]any)["namespace"]; ns != tt.sa {
							t.Errorf("%s: got subject namespace %v, want %s", describe(o), ns, tt.sa)
						}
					}
				}
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
	if objs[0].GetName() != "picogate-system" {
		t.Errorf("Retarget modified its input: got Namespace %s, want picogate-system", objs[0].GetName())
	}
}

func TestDecodeManifestErrors(t *testing.T) {
	tests := []struct {
		name, manifest, want string
	}{
		{"empty", "", "no objects"},
		{"only separators", "---\n---\n", "no objects"},
		{"no kind", "apiVersion: v1\nmetadata: {name: x}\n", "want apiVersion, kind and metadata.name"},
		{"not yaml", "kind: [", "document 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeManifest([]byte(tt.manifest))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error mentioning %q", err, tt.want)
			}
		})
	}
}

// TestNewReportsEveryProblem: one run names every bad setting, as the guide asks of every Config.
func TestNewReportsEveryProblem(t *testing.T) {
	_, err := New(Config{TokenTTL: time.Minute, Namespace: "Bad_NS", Owner: "no-such-user-picogate", Manifest: []byte("kind: Namespace\n")})
	if err == nil {
		t.Fatal("got no error, want one per problem")
	}
	for _, want := range []string{"admin credential", "--token-ttl 1m0s", `--namespace "Bad_NS"`, `no user "no-such-user-picogate"`, "gateway RBAC manifest"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("got %q, want it to mention %q", err, want)
		}
	}
	s, err := New(Config{Admin: &rest.Config{}})
	if err != nil {
		t.Fatalf("defaults: %v", err)
	}
	if s.cfg.TokenTTL != DefaultTokenTTL || s.files.Kubeconfig != DefaultOutput || s.files.Token != DefaultOutput+".token" || s.sa.String() != "picogate-system/picogate" {
		t.Errorf("defaults: got ttl %s, files %+v, sa %s", s.cfg.TokenTTL, s.files, s.sa)
	}
}

func TestKubeconfigGolden(t *testing.T) {
	f := files{Kubeconfig: "/etc/picogate/kubeconfig", Token: "/etc/picogate/kubeconfig.token", CA: "/etc/picogate/kubeconfig.ca.crt"}
	got, err := kubeconfig("https://192.168.1.10:6443", "", f, "picogate-system")
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "kubeconfig.golden")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

// TestKubeconfigMeansInClusterConfig: what client-go builds from the written kubeconfig has the same
// credential fields rest.InClusterConfig fills from /var/run/secrets/kubernetes.io/serviceaccount (the
// CA by file, the token by file, re-read when it is replaced), and nothing else.
func TestKubeconfigMeansInClusterConfig(t *testing.T) {
	dir := t.TempDir()
	f := files{Kubeconfig: filepath.Join(dir, "kubeconfig"), Token: filepath.Join(dir, "kubeconfig.token"), CA: filepath.Join(dir, "kubeconfig.ca.crt")}
	kc, err := kubeconfig("https://10.43.0.1:443", "", f, "picogate-system")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.write([]byte("not checked here"), []byte("the-token"), kc, owner{}); err != nil {
		t.Fatal(err)
	}
	rc, err := clientcmd.BuildConfigFromFlags("", f.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	want := rest.Config{Host: "https://10.43.0.1:443", BearerToken: "the-token", BearerTokenFile: f.Token,
		TLSClientConfig: rest.TLSClientConfig{CAFile: f.CA}}
	got := rest.Config{Host: rc.Host, BearerToken: rc.BearerToken, BearerTokenFile: rc.BearerTokenFile,
		TLSClientConfig: rest.TLSClientConfig{CAFile: rc.CAFile, CertFile: rc.CertFile, KeyFile: rc.KeyFile, CertData: rc.CertData, KeyData: rc.KeyData, CAData: rc.CAData}}
	if got.String() != want.String() || got.BearerTokenFile != want.BearerTokenFile || got.CAFile != want.CAFile || got.BearerToken != want.BearerToken {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if rc.ExecProvider != nil || rc.AuthProvider != nil || rc.Username != "" || rc.Impersonate.UserName != "" {
		t.Errorf("got extra credentials in %+v, want the token alone", rc)
	}
}

func TestWriteAtomic(t *testing.T) {
	dir := t.TempDir()
	me := strconv.Itoa(os.Getuid())
	o, err := parseOwner(me)
	if err != nil {
		t.Fatal(err)
	}
	f := files{Kubeconfig: filepath.Join(dir, "sub", "kubeconfig")}
	f.Token, f.CA = f.Kubeconfig+TokenSuffix, f.Kubeconfig+CASuffix
	for i, tok := range []string{"first", "second"} {
		if err := f.write([]byte("ca"), []byte(tok), []byte("kc"), o); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		for _, p := range []string{f.Kubeconfig, f.Token, f.CA} {
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("%s: got mode %o, want 600", p, fi.Mode().Perm())
			}
		}
		if b, _ := os.ReadFile(f.Token); string(b) != tok {
			t.Errorf("token after write %d: got %q, want %q", i, b, tok)
		}
	}
	left, _ := filepath.Glob(filepath.Join(dir, "sub", ".*tmp*"))
	if len(left) != 0 {
		t.Errorf("got temporary files left behind: %v", left)
	}
}

func TestParseOwner(t *testing.T) {
	tests := []struct {
		in       string
		uid, gid int
		err      string
	}{
		{"", -1, -1, ""},
		{"0", 0, 0, ""},
		{"65532", 65532, 65532, ""},
		{"65532:100", 65532, 100, ""},
		{"root", 0, 0, ""},
		{":x", 0, 0, "want USER or USER:GROUP"},
		{"root:", 0, 0, "want USER or USER:GROUP"},
		{"no-such-user-picogate", 0, 0, "no user"},
		{"root:no-such-group-picogate", 0, 0, "no group"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			o, err := parseOwner(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("got %v, want an error mentioning %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.uid < 0 {
				if o.set {
					t.Errorf("got %+v, want no owner", o)
				}
				return
			}
			if o.uid != tt.uid || o.gid != tt.gid {
				t.Errorf("got %d:%d, want %d:%d", o.uid, o.gid, tt.uid, tt.gid)
			}
		})
	}
}

// TestSharedIdentityManifest: --shared-identity adds rbac-shared.yaml's objects to the gateway's, moved
// with them to another namespace, and setup then checks the right to impersonate picogate:shared.
func TestSharedIdentityManifest(t *testing.T) {
	tests := []struct {
		shared bool
		ns     string
		want   []string // describe() of every object after rbac.yaml's
		right  bool     // impersonating picogate:shared is checked
	}{
		{false, "picogate-system", nil, false},
		{true, "picogate-system", []string{"ClusterRole picogate-shared-impersonate", "ClusterRoleBinding picogate-shared-impersonate",
			"ClusterRole picogate-shared", "ClusterRoleBinding picogate-shared"}, true},
		{true, "lab", []string{"ClusterRole picogate-shared-impersonate", "ClusterRoleBinding picogate-shared-impersonate-lab",
			"ClusterRole picogate-shared", "ClusterRoleBinding picogate-shared-lab"}, true},
	}
	base, err := DecodeManifest(deploy.RBAC())
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("shared=%v,%s", tt.shared, tt.ns), func(t *testing.T) {
			s, err := New(Config{Admin: &rest.Config{}, SharedIdentity: tt.shared, Namespace: tt.ns})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, o := range s.objects[len(base):] {
				got = append(got, describe(o))
				if subj, ok, _ := unstructured.NestedSlice(o.Object, "subjects"); ok {
					for _, sub := range subj {
						m := sub.(map[string]any)
						if m["kind"] == "ServiceAccount" && m["namespace"] != tt.ns {
							t.Errorf("%s: got subject namespace %v, want %s", describe(o), m["namespace"], tt.ns)
						}
					}
				}
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
			checked := false
			for _, r := range s.rights() {
				checked = checked || r.attrs.Name == "picogate:shared"
			}
			if checked != tt.right {
				t.Errorf("impersonating picogate:shared checked: got %v, want %v", checked, tt.right)
			}
		})
	}
}
