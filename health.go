package passwordless

import (
	"context"
	"net/http"
	"sync"
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

// channelFailing reports whether the channel's deliveries are failing:
// its last delivery attempt failed, and no probe has found the provider
// answering since. The state ends with the next delivery that succeeds, or
// with a probe that does: without probes a load balancer that took the
// instance out on a 503 would never send it the request that ends it.
func (p *Passwordless) channelFailing(ctx context.Context, k AliasKind) bool {
	if !p.outbox.failing(k) {
		return false
	}
	pr, ok := p.senders[k].(prober)
	// Health is public: probes are spaced so that polling it cannot make
	// the plugin hammer the provider, or trip its limits on logins.
	if !ok || !p.probes.due(k, now()) {
		return true
	}
	if err := pr.Probe(ctx); err != nil {
		p.logger.Warn("health: provider still failing", zap.String("channel", string(k)), zap.Error(err))
		return true
	}
	p.outbox.succeeded(k)
	return false
}

// probeEvery is the least time between two probes of one channel.
const probeEvery = 10 * time.Second

// probeThrottle spaces the probes of each channel.
type probeThrottle struct {
	mu   sync.Mutex
	last map[AliasKind]time.Time
}

// due reports whether k may be probed at t, and if so notes the probe.
func (pt *probeThrottle) due(k AliasKind, t time.Time) bool {
	pt.mu.Lock()
	defer pt.mu.Unlock()
	if pt.last == nil {
		pt.last = make(map[AliasKind]time.Time)
	}
	if last, ok := pt.last[k]; ok && t.Sub(last) < probeEvery {
		return false
	}
	pt.last[k] = t
	return true
}
