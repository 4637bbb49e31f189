package bench

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// response is what the load generator keeps of one HTTP/1.1 response.
type response struct {
	status int
	close  bool  // the server will close the connection after it
	bytes  int64 // status line, headers and body as they came on the wire (chunk framing included)
}

var errMalformed = errors.New("malformed response")

// readResponse reads one whole HTTP/1.1 response from br and throws the body away. It reads headers with
// ReadSlice, so a response costs the client no allocation: the load generator's CPU must stay small next
// to the proxy's, and every target is read by the same code. A body is delimited by Content-Length, by
// chunked framing, or (neither) by the server closing the connection.
func readResponse(br *bufio.Reader) (response, error) {
	var r response
	line, err := br.ReadSlice('\n')
	if err != nil {
		return r, fmt.Errorf("reading status line: %w", err)
	}
	r.bytes += int64(len(line))
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return r, fmt.Errorf("%w: status line %q", errMalformed, trim(line))
	}
	if r.status, err = strconv.Atoi(string(line[9:12])); err != nil {
		return r, fmt.Errorf("%w: status line %q", errMalformed, trim(line))
	}
	r.close = line[7] == '0' // HTTP/1.0 closes unless told otherwise; no proxy here speaks it
	contentLength, chunked := int64(-1), false
	for {
		line, err = br.ReadSlice('\n')
		if err != nil {
			return r, fmt.Errorf("reading headers: %w", err)
		}
		r.bytes += int64(len(line))
		h := trim(line)
		if len(h) == 0 {
			break
		}
		name, value, ok := bytes.Cut(h, []byte(":"))
		if !ok {
			return r, fmt.Errorf("%w: header line %q", errMalformed, h)
		}
		value = bytes.TrimSpace(value)
		switch {
		case asciiEqualFold(name, "content-length"):
			if contentLength, err = strconv.ParseInt(string(value), 10, 64); err != nil || contentLength < 0 {
				return r, fmt.Errorf("%w: Content-Length %q", errMalformed, value)
			}
		case asciiEqualFold(name, "transfer-encoding"):
			chunked = asciiContainsFold(value, "chunked")
		case asciiEqualFold(name, "connection"):
			r.close = asciiContainsFold(value, "close")
		}
	}
	var n int64
	switch {
	case r.status == 204 || r.status == 304 || r.status/100 == 1:
	case chunked:
		n, err = discardChunked(br)
	case contentLength >= 0:
		var d int
		d, err = br.Discard(int(contentLength))
		n = int64(d)
	default:
		n, err = io.Copy(io.Discard, br)
		r.close = true
	}
	r.bytes += n
	if err != nil {
		return r, fmt.Errorf("reading body: %w", err)
	}
	return r, nil
}

// discardChunked reads a chunked body and its trailer, returning the bytes consumed.
func discardChunked(br *bufio.Reader) (int64, error) {
	var total int64
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return total, err
		}
		total += int64(len(line))
		sz := trim(line)
		if i := bytes.IndexByte(sz, ';'); i >= 0 {
			sz = sz[:i]
		}
		size, err := strconv.ParseInt(string(bytes.TrimSpace(sz)), 16, 64)
		if err != nil || size < 0 {
			return total, fmt.Errorf("%w: chunk size %q", errMalformed, sz)
		}
		if size == 0 {
			break
		}
		d, err := br.Discard(int(size) + 2) // data and its CRLF
		total += int64(d)
		if err != nil {
			return total, err
		}
	}
	for { // trailer lines, then the empty line
		line, err := br.ReadSlice('\n')
		if err != nil {
			return total, err
		}
		total += int64(len(line))
		if len(trim(line)) == 0 {
			return total, nil
		}
	}
}

func trim(line []byte) []byte { return bytes.TrimRight(line, "\r\n") }

// asciiEqualFold compares a header name with a lower-case ASCII want without allocating.
func asciiEqualFold(b []byte, want string) bool {
	if len(b) != len(want) {
		return false
	}
	for i := range b {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != want[i] {
			return false
		}
	}
	return true
}

func asciiContainsFold(b []byte, want string) bool {
	for i := 0; i+len(want) <= len(b); i++ {
		if asciiEqualFold(b[i:i+len(want)], want) {
			return true
		}
	}
	return false
}
