package gateway

import (
	"context"
	"errors"
	"log"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// ServerConfig bounds what a slow, idle or hostile client can hold on the device port.
type ServerConfig struct {
	// ReadHeaderTimeout bounds receiving request headers (slowloris). Default 10s.
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes kept-alive connections with no request. Default 5s: a board's next request is
	// seconds away (a heartbeat every 10 s), reconnecting on the LAN costs it a handshake, and an idle
	// connection costs the gateway about 18 KB (a goroutine and two 4 KiB buffers): 90 MB for 5,000
	// boards that keep one open.
	IdleTimeout time.Duration
	// MaxHeaderBytes caps request headers (431 beyond). Default 16 KiB.
	MaxHeaderBytes int
	// ShutdownTimeout bounds draining in-flight requests on shutdown. Default 20s.
	ShutdownTimeout time.Duration
}

// Serve serves devices on ln until ctx ends, then shuts down gracefully: it stops accepting, ends open
// watches (devices reconnect, possibly to another replica), lets in-flight requests finish within
// ShutdownTimeout, and returns nil after a clean drain.
func (g *Gateway) Serve(ctx context.Context, ln net.Listener, sc ServerConfig) error {
	setDefault(&sc.ReadHeaderTimeout, 10*time.Second)
	setDefault(&sc.IdleTimeout, 5*time.Second)
	setDefault(&sc.MaxHeaderBytes, 16<<10)
	setDefault(&sc.ShutdownTimeout, 20*time.Second)
	srv := &http.Server{
		Handler:           g.handler,
		ReadHeaderTimeout: sc.ReadHeaderTimeout,
		IdleTimeout:       sc.IdleTimeout,
		MaxHeaderBytes:    sc.MaxHeaderBytes,
		ErrorLog:          log.New(&slogWriter{g.log}, "", 0),
	}
	return serveUntil(ctx, srv, ln, sc.ShutdownTimeout, g.EndWatches)
}

// serveUntil runs srv on ln until ctx ends, then drains it. beforeDrain runs once shutdown has begun.
func serveUntil(ctx context.Context, srv *http.Server, ln net.Listener, timeout time.Duration, beforeDrain func()) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(sctx) }()
	if beforeDrain != nil {
		beforeDrain()
	}
	err := <-shut
	if errors.Is(err, context.DeadlineExceeded) {
		_ = srv.Close()
		return errors.New("shutdown timed out: in-flight requests were cut off")
	}
	if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		return serr
	}
	return err
}

// ServeAdmin serves the admin handler (health, readiness, metrics) on ln until ctx ends.
func ServeAdmin(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 60 * time.Second}
	return serveUntil(ctx, srv, ln, 2*time.Second, nil)
}

// slogWriter routes net/http's own error log (TLS junk, header overflows) into slog.
type slogWriter struct{ log *slog.Logger }

func (w *slogWriter) Write(p []byte) (int, error) {
	w.log.Debug("http server", "msg", string(p))
	return len(p), nil
}
