package compact

import (
	"bytes"
	"io"
)

// EventWriter compacts a stream of concatenated JSON values — a Kubernetes watch response — value by
// value as they are written, so a watch reaches the device event by event and nothing but the event in
// progress is buffered. An event larger than the limit, or any framing it cannot follow, switches the
// writer to passing the remaining stream through untouched: what was already sent stays valid and what
// follows is the API server's own bytes.
type EventWriter struct {
	w     io.Writer
	limit int
	buf   []byte // bytes of the event in progress
	out   []byte // reused output buffer
	pass  bool   // passing through untouched from now on
	// unframed: the stream holds something other than a JSON object or array at the top level
	unframed bool

	// boundary scanner state, carried across writes
	scanned  int
	depth    int
	inString bool
	escaped  bool
}

// NewEventWriter returns an EventWriter writing to w that buffers at most limit bytes of one event.
func NewEventWriter(w io.Writer, limit int) *EventWriter {
	return &EventWriter{w: w, limit: limit}
}

// Write consumes p, writing every event it completes.
func (e *EventWriter) Write(p []byte) (int, error) {
	if e.pass {
		return e.w.Write(p)
	}
	e.buf = append(e.buf, p...)
	for {
		end, ok := e.nextBoundary()
		if !ok {
			break
		}
		if end > e.limit {
			return len(p), e.passThrough()
		}
		if err := e.emit(e.buf[:end]); err != nil {
			return len(p), err
		}
		e.buf = e.buf[:copy(e.buf, e.buf[end:])]
		e.scanned = 0
	}
	if e.unframed || len(e.buf) > e.limit {
		return len(p), e.passThrough()
	}
	return len(p), nil
}

// passThrough writes the buffered bytes untouched and stops compacting.
func (e *EventWriter) passThrough() error {
	e.pass = true
	rest := e.buf
	e.buf = nil
	_, err := e.w.Write(rest)
	return err
}

// Close writes whatever is left of an unfinished event untouched (a stream cut mid-event stays cut, it is
// not repaired or dropped silently).
func (e *EventWriter) Close() error {
	if len(bytes.TrimSpace(e.buf)) == 0 {
		return nil
	}
	rest := e.buf
	e.buf = nil
	_, err := e.w.Write(rest)
	return err
}

// Abandon drops an event still in progress, which can no longer be completed (its stream broke off),
// so that what was written ends after the last whole event. It reports false when the writer is passing
// the stream through untouched, and so does not know where events end.
func (e *EventWriter) Abandon() bool {
	if e.pass {
		return false
	}
	e.buf = e.buf[:0]
	e.scanned, e.depth, e.inString, e.escaped, e.unframed = 0, 0, false, false, false
	return true
}

// emit writes one event: compacted if it is valid JSON, as-is otherwise, followed by the newline that
// separates events in the API server's JSON framing.
func (e *EventWriter) emit(ev []byte) error {
	trimmed := bytes.TrimSpace(ev)
	if len(trimmed) == 0 {
		return nil
	}
	out, err := Append(e.out[:0], trimmed)
	if err != nil {
		out = append(e.out[:0], trimmed...)
	}
	out = append(out, '\n')
	e.out = out
	_, werr := e.w.Write(out)
	return werr
}

// nextBoundary continues scanning buf for the end of a top-level value and returns the offset just past
// it. Only objects and arrays are events: anything else at the top level (a scalar, a stray closing
// bracket, text that is not JSON) is framing the writer cannot follow, and sets unframed.
func (e *EventWriter) nextBoundary() (int, bool) {
	for i := e.scanned; i < len(e.buf); i++ {
		c := e.buf[i]
		switch {
		case e.inString:
			switch {
			case e.escaped:
				e.escaped = false
			case c == '\\':
				e.escaped = true
			case c == '"':
				e.inString = false
			}
		case e.depth == 0 && (c == '\n' || c == ' ' || c == '\t' || c == '\r'):
		case e.depth == 0 && c != '{' && c != '[':
			e.unframed = true
			return 0, false
		case c == '"':
			e.inString = true
		case c == '{' || c == '[':
			e.depth++
		case c == '}' || c == ']':
			e.depth--
			if e.depth == 0 {
				e.scanned = i + 1
				return i + 1, true
			}
		}
	}
	e.scanned = len(e.buf)
	return 0, false
}
