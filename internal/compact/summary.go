package compact

import "fmt"

// AppendSummary appends to dst a summary of the JSON object src: its kind and apiVersion, its
// metadata's name, namespace, uid and resourceVersion, and for each of its status.conditions the type
// and status, each value exactly as in src; members src lacks are left out. It is what the gateway
// answers a successful write with when the whole object is more than a device can receive and the
// device reads no more than the status line (the reference firmware's heartbeat): still the object
// written, named and versioned, never a cut copy of it. On error dst is returned unchanged.
func AppendSummary(dst, src []byte) ([]byte, error) {
	mark := len(dst)
	s := scanner{src: src, discard: true}
	s.skipSpace()
	top, err := s.members(0)
	if err != nil {
		return dst[:mark:mark], fmt.Errorf("summarizing at byte %d: %w", s.pos, err)
	}
	if s.skipSpace(); s.pos != len(src) {
		return dst[:mark:mark], fmt.Errorf("summarizing at byte %d: %w: data after the object", s.pos, ErrInvalid)
	}
	w := objectWriter{dst: dst, src: src}
	w.open()
	w.member("kind", top["kind"])
	w.member("apiVersion", top["apiVersion"])
	if meta, err := membersOf(src, top["metadata"]); err != nil {
		return dst[:mark:mark], err
	} else if meta != nil {
		w.key("metadata")
		w.open()
		for _, k := range [...]string{"name", "namespace", "uid", "resourceVersion"} {
			w.member(k, meta[k])
		}
		w.close()
	}
	var conditions []span
	if st, err := membersOf(src, top["status"]); err != nil {
		return dst[:mark:mark], err
	} else if c, ok := st["conditions"]; ok && c.start < len(src) && src[c.start] == '[' {
		if conditions, err = elements(src, c); err != nil {
			return dst[:mark:mark], err
		}
		w.key("status")
		w.open()
		w.key("conditions")
		w.dst = append(w.dst, '[')
		for i, c := range conditions {
			cond, err := membersOf(src, c)
			if err != nil {
				return dst[:mark:mark], err
			}
			if i > 0 {
				w.dst = append(w.dst, ',')
			}
			cw := objectWriter{dst: w.dst, src: src}
			cw.open()
			cw.member("type", cond["type"])
			cw.member("status", cond["status"])
			cw.close()
			w.dst = cw.dst
		}
		w.dst = append(w.dst, ']')
		w.close()
	}
	w.close()
	return w.dst, nil
}

// span is the position of one JSON value in src.
type span struct{ start, end int }

// members reads the object at s.pos (skipping whitespace inside), returning where each member's value
// lies. A key given twice keeps its last value, as the API server's decoder does.
func (s *scanner) members(depth int) (map[string]span, error) {
	if s.pos >= len(s.src) || s.src[s.pos] != '{' {
		return nil, ErrInvalid
	}
	if depth >= MaxDepth {
		return nil, ErrTooDeep
	}
	out := map[string]span{}
	s.pos++
	s.skipSpace()
	if s.pos < len(s.src) && s.src[s.pos] == '}' {
		s.pos++
		return out, nil
	}
	for {
		if s.pos >= len(s.src) || s.src[s.pos] != '"' {
			return nil, ErrInvalid
		}
		keyStart := s.pos
		if err := s.skipString(); err != nil {
			return nil, err
		}
		key := string(s.src[keyStart+1 : s.pos-1]) // raw: an escaped key matches nothing we look for
		s.skipSpace()
		if s.pos >= len(s.src) || s.src[s.pos] != ':' {
			return nil, ErrInvalid
		}
		s.pos++
		s.skipSpace()
		start := s.pos
		if err := s.value(plain, depth+1); err != nil {
			return nil, err
		}
		out[key] = span{start, s.pos}
		s.skipSpace()
		if s.pos >= len(s.src) {
			return nil, ErrInvalid
		}
		switch s.src[s.pos] {
		case ',':
			s.pos++
			s.skipSpace()
		case '}':
			s.pos++
			return out, nil
		default:
			return nil, ErrInvalid
		}
	}
}

// membersOf reads the members of the object at sp; nil when sp is empty or not an object.
func membersOf(src []byte, sp span) (map[string]span, error) {
	if sp.end == 0 || src[sp.start] != '{' {
		return nil, nil
	}
	s := scanner{src: src[:sp.end], pos: sp.start, discard: true}
	return s.members(1)
}

// elements returns where each element of the array at sp lies.
func elements(src []byte, sp span) ([]span, error) {
	s := scanner{src: src[:sp.end], pos: sp.start + 1, discard: true}
	var out []span
	s.skipSpace()
	for s.pos < len(s.src) && s.src[s.pos] != ']' {
		start := s.pos
		if err := s.value(plain, 1); err != nil {
			return nil, err
		}
		out = append(out, span{start, s.pos})
		s.skipSpace()
		if s.pos < len(s.src) && s.src[s.pos] == ',' {
			s.pos++
			s.skipSpace()
		}
	}
	return out, nil
}

// objectWriter appends an object's members, a comma before all but the first.
type objectWriter struct {
	dst    []byte
	src    []byte
	counts []int
}

func (w *objectWriter) open() {
	w.dst = append(w.dst, '{')
	w.counts = append(w.counts, 0)
}

func (w *objectWriter) close() {
	w.dst = append(w.dst, '}')
	w.counts = w.counts[:len(w.counts)-1]
}

func (w *objectWriter) key(k string) {
	if w.counts[len(w.counts)-1] > 0 {
		w.dst = append(w.dst, ',')
	}
	w.counts[len(w.counts)-1]++
	w.dst = append(w.dst, '"')
	w.dst = append(w.dst, k...)
	w.dst = append(w.dst, '"', ':')
}

func (w *objectWriter) member(k string, v span) {
	if v.end == 0 {
		return
	}
	w.key(k)
	w.dst = append(w.dst, w.src[v.start:v.end]...)
}
