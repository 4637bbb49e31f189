package gateway

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/picogate/picogate/internal/registry"
)

// TestRefusedBodyClosesConnection: a request refused while its body is still unread (a body trickled
// past the body timeout, or a request refused before its body is read) is answered at once and its
// connection closed. Without that, net/http goes on reading the body after the handler, with no
// deadline, and a device sending 1 byte/s holds the connection and never sees the answer.
func TestRefusedBodyClosesConnection(t *testing.T) {
	tests := []struct {
		name     string
		auth     string
		wantCode string
	}{
		{"body trickled past the timeout", "Authorization: Bearer tok-pico-1\r\n", "408"},
		{"refused before the body is read", "", "401"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newTestGateway(t, Config{Registry: registryOf(dev("pico-1", registry.AuthToken)), BodyTimeout: 300 * time.Millisecond})
			srv := httptest.NewServer(g.Handler())
			defer srv.Close()
			c, err := net.Dial("tcp", srv.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_, _ = io.WriteString(c, "POST /api/v1/nodes HTTP/1.1\r\nHost: x\r\n"+tt.auth+"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
			stop := make(chan struct{})
			defer close(stop)
			go func() { // the trickle: one byte every 100ms
				for {
					select {
					case <-stop:
						return
					case <-time.After(100 * time.Millisecond):
						if _, err := c.Write([]byte(" ")); err != nil {
							return
						}
					}
				}
			}()
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("no answer while the body trickles: %v", err)
			}
			if got := resp.Status; !strings.HasPrefix(got, tt.wantCode) || !resp.Close {
				t.Errorf("got %q (close %v), want %s and Connection: close", got, resp.Close, tt.wantCode)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			// EOF, or a reset when the gateway closes with trickled bytes still unread.
			if _, err := br.ReadByte(); err != io.EOF && !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("after the answer: got %v, want the connection closed", err)
			}
		})
	}
}
