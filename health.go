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
	for _, k := range metricChannels {
		if _, ok := p.senders[k]; ok && p.channelFailing(k) {
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
// its last real delivery failed. It turns healthy again with the next
// delivery that succeeds.
func (p *Passwordless) channelFailing(k AliasKind) bool {
	return p.timers[k].isFailing()
}
