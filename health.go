package passwordless

import (
	"context"
	"net/http"
	"time"

	"go.uber.org/zap"
)

// healthTimeout bounds the store check, so a hung database answers 503
// rather than keeping a load balancer waiting.
const healthTimeout = 2 * time.Second

// Names of the parts health reports as down.
const (
	partStorage = "storage"
)

type healthResponse struct {
	Status string   `json:"status"`
	Down   []string `json:"down,omitempty"`
}

// serveHealth is GET {prefix}/health: 200 while the store answers and no
// configured channel is failing, else 503 naming the parts that are down.
// It names parts only, never a server, a DSN or an error text, since
// anyone may call it.
func (p *Passwordless) serveHealth(w http.ResponseWriter, r *http.Request) *apiError {
	var down []string
	ctx, cancel := context.WithTimeout(r.Context(), healthTimeout)
	defer cancel()
	if err := p.store.Ping(ctx); err != nil {
		p.logger.Warn("health: storage does not answer", zap.Error(err))
		down = append(down, partStorage)
	}
	for _, k := range []AliasKind{KindEmail, KindMobile} {
		if _, ok := p.senders[k]; ok && p.channelFailing(ctx, k) {
			down = append(down, string(k))
		}
	}
	w.Header().Set("Cache-Control", "no-store")
	if len(down) > 0 {
		writeJSON(w, http.StatusServiceUnavailable, healthResponse{Status: "unavailable", Down: down})
		return nil
	}
	writeJSON(w, http.StatusOK, healthResponse{Status: "ok"})
	return nil
}

// channelFailing reports whether the channel's provider is failing, as
// its last probe found it; while it is, a probe that is due runs now, so
// that a load balancer that took the instance out on a 503 sees it come
// back without waiting for a request it would never send.
func (p *Passwordless) channelFailing(ctx context.Context, k AliasKind) bool {
	if !p.outbox.failing(k) {
		return false
	}
	return p.outbox.check(ctx, k)
}
