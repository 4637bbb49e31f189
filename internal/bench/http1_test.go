package bench

import (
	"bufio"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestReadResponse(t *testing.T) {
	tests := []struct {
		name       string
		wire       string
		wantStatus int
		wantClose  bool
		wantErr    error
		// wantBytes is -1 for "all of wire"
		wantBytes int64
	}{
		{name: "content length", wire: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", wantStatus: 200, wantBytes: -1},
		{name: "chunked with extension and trailer", wire: "HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked\r\n\r\n5;x=y\r\nhello\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n", wantStatus: 200, wantBytes: -1},
		{name: "connection close", wire: "HTTP/1.1 201 Created\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}", wantStatus: 201, wantClose: true, wantBytes: -1},
		{name: "delimited by close", wire: "HTTP/1.1 200 OK\r\n\r\nuntil the end", wantStatus: 200, wantClose: true, wantBytes: -1},
		{name: "no body for 304", wire: "HTTP/1.1 304 Not Modified\r\n\r\n", wantStatus: 304, wantBytes: -1},
		{name: "error status is read whole", wire: "HTTP/1.1 429 Too Many Requests\r\nContent-Length: 3\r\n\r\nno!", wantStatus: 429, wantBytes: -1},
		{name: "http 1.0 closes", wire: "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", wantStatus: 200, wantClose: true, wantBytes: -1},
		{name: "not http", wire: "SSH-2.0-OpenSSH\r\n", wantErr: errMalformed},
		{name: "bad length", wire: "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", wantErr: errMalformed},
		{name: "bad chunk", wire: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", wantErr: errMalformed},
		{name: "short body", wire: "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", wantErr: io.EOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := readResponse(bufio.NewReader(strings.NewReader(tt.wire)))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("got error %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("got error %v, want none", err)
			}
			want := tt.wantBytes
			if want < 0 {
				want = int64(len(tt.wire))
			}
			if r.status != tt.wantStatus || r.close != tt.wantClose || r.bytes != want {
				t.Errorf("got status %d close %v bytes %d, want %d %v %d", r.status, r.close, r.bytes, tt.wantStatus, tt.wantClose, want)
			}
		})
	}
}

// TestReadResponseKeepAlive reads two responses from one stream, as on a kept-alive connection.
func TestReadResponseKeepAlive(t *testing.T) {
	one := "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	two := "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
	br := bufio.NewReader(strings.NewReader(one + two))
	for i, want := range []string{one, two} {
		r, err := readResponse(br)
		if err != nil || r.bytes != int64(len(want)) || r.close {
			t.Errorf("response %d: got %+v, %v, want %d bytes, kept alive", i, r, err, len(want))
		}
	}
	if _, err := readResponse(br); !errors.Is(err, io.EOF) {
		t.Errorf("after both: got %v, want EOF", err)
	}
}

// FuzzReadResponse: whatever a proxy sends, the reader returns, never panics, and never claims more
// bytes than it was given.
func FuzzReadResponse(f *testing.F) {
	f.Add("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
	f.Add("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
	f.Add("HTTP/1.1 200 OK\r\n\r\nrest")
	f.Fuzz(func(t *testing.T, wire string) {
		r, _ := readResponse(bufio.NewReader(strings.NewReader(wire)))
		if r.bytes > int64(len(wire)) {
			t.Errorf("got %d bytes counted, want at most the %d given", r.bytes, len(wire))
		}
	})
}
