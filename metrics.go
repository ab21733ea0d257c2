package passwordless

import (
	"errors"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The plugin's Prometheus metrics. They live in Caddy's own registry, so
// they are served wherever Caddy serves metrics: the admin endpoint's
// /metrics and any `metrics` handler. Every label value comes from a
// closed set written here, never from a request, so a client cannot grow
// the number of series.
//
// Caddy gives each config load a new registry. The collectors are made
// once per process and registered into every new registry, as Caddy does
// with its own admin metrics, so a reload carries the counts on instead of
// starting them again at zero.
var metrics = struct {
	codesSent        *prometheus.CounterVec
	deliveryFailures *prometheus.CounterVec
	logins           *prometheus.CounterVec
	rateLimited      *prometheus.CounterVec
	protected        *prometheus.CounterVec
	outboxPending    *prometheus.GaugeVec
	deliverySeconds  *prometheus.HistogramVec
}{
	codesSent: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "passwordless", Name: "codes_sent_total",
		Help: "Codes handed to the email or SMS provider, by channel and purpose (login or verify).",
	}, []string{"channel", "purpose"}),
	deliveryFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "passwordless", Name: "delivery_failures_total",
		Help: "Deliveries the provider did not accept (down, timed out, refused the credentials), by channel. A recipient the provider refuses is not counted.",
	}, []string{"channel"}),
	logins: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "passwordless", Name: "logins_total",
		Help: "Sign-ins by channel (email, mobile, passkey) and result: success, invalid (a wrong, expired or used code; a refused passkey) or locked (refused because the alias is locked out).",
	}, []string{"channel", "result"}),
	rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "passwordless", Name: "rate_limited_total",
		Help: "Requests refused with 429 by a rate limit: send_interval, per_alias, per_ip or failed_per_ip.",
	}, []string{"limit"}),
	protected: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "passwordless", Name: "protected_requests_total",
		Help: "Requests to protected routes by result: allowed, unauthenticated (401 or sent to the sign-in page) or forbidden (403).",
	}, []string{"result"}),
	outboxPending: prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "caddy", Subsystem: "passwordless", Name: "outbox_pending",
		Help: "Messages waiting in the outbox for delivery, by channel.",
	}, []string{"channel"}),
	deliverySeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "caddy", Subsystem: "passwordless", Name: "delivery_seconds",
		Help:    "Time one delivery attempt to the provider took, successful or not, by channel.",
		Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30},
	}, []string{"channel"}),
}

// The closed label sets.
var (
	metricChannels = []AliasKind{KindEmail, KindMobile}
	metricPurposes = []string{purposeLogin, purposeVerify}
)

const (
	loginSuccess = "success"
	loginInvalid = "invalid"
	loginLocked  = "locked"

	protectedAllowed         = "allowed"
	protectedUnauthenticated = "unauthenticated"
	protectedForbidden       = "forbidden"

	limitOther = "other"
)

// limitNames name the limit a rate-limit key belongs to, by its prefix
// (see allowIP, allowSend and failedIPKey).
var limitNames = map[string]string{
	"interval":  "send_interval",
	"alias":     "per_alias",
	"ip":        "per_ip",
	"failed-ip": "failed_per_ip",
}

func init() {
	// Every series of the closed sets exists from the start at 0, so that
	// rate() and increase() see the first event, and dashboards show the
	// series before anything happened.
	for _, ch := range metricChannels {
		c := string(ch)
		for _, p := range metricPurposes {
			metrics.codesSent.WithLabelValues(c, p)
		}
		metrics.deliveryFailures.WithLabelValues(c)
		for _, r := range []string{loginSuccess, loginInvalid, loginLocked} {
			metrics.logins.WithLabelValues(c, r)
		}
		metrics.outboxPending.WithLabelValues(c)
		metrics.deliverySeconds.WithLabelValues(c)
	}
	for _, l := range limitNames {
		metrics.rateLimited.WithLabelValues(l)
	}
	for _, r := range []string{protectedAllowed, protectedUnauthenticated, protectedForbidden} {
		protectedCounters[r] = metrics.protected.WithLabelValues(r)
	}
}

// registerMetrics adds the collectors to the registry of the config being
// loaded. A second passwordless handler in the same config finds them
// there already; that is no error.
func registerMetrics(reg *prometheus.Registry) error {
	if reg == nil {
		return nil
	}
	for _, c := range []prometheus.Collector{
		metrics.codesSent, metrics.deliveryFailures, metrics.logins, metrics.rateLimited,
		metrics.protected, metrics.outboxPending, metrics.deliverySeconds, passkeysRegistered,
	} {
		var already prometheus.AlreadyRegisteredError
		if err := reg.Register(c); err != nil && !errors.As(err, &already) {
			return err
		}
	}
	return nil
}

// channelLabel keeps the channel label to its closed set.
func channelLabel(k AliasKind) string {
	if k == KindMobile {
		return string(KindMobile)
	}
	return string(KindEmail)
}

// purposeLabel keeps the purpose label to its closed set.
func purposeLabel(purpose string) string {
	if purpose == purposeVerify {
		return purposeVerify
	}
	return purposeLogin
}

// countDelivery records one delivery attempt that took d; err is what the
// sender answered.
func countDelivery(k AliasKind, purpose string, d time.Duration, err error) {
	ch := channelLabel(k)
	metrics.deliverySeconds.WithLabelValues(ch).Observe(d.Seconds())
	switch {
	case err == nil:
		metrics.codesSent.WithLabelValues(ch, purposeLabel(purpose)).Inc()
	case !errors.Is(err, errBadRecipient):
		metrics.deliveryFailures.WithLabelValues(ch).Inc()
	}
}

// countExchange records the result of a code exchange for an alias of
// kind k: loginSuccess, loginInvalid or loginLocked.
func countExchange(k AliasKind, result string) {
	metrics.logins.WithLabelValues(channelLabel(k), result).Inc()
}

// countRateLimited records a 429 of the limit whose key is key.
func countRateLimited(key string) {
	prefix, _, _ := strings.Cut(key, ":")
	name, ok := limitNames[prefix]
	if !ok {
		name = limitOther
	}
	metrics.rateLimited.WithLabelValues(name).Inc()
}

// protectedCounters are protected_requests_total's three counters, looked
// up once: every protected request counts, and WithLabelValues hashes
// and locks.
// init fills it as it makes the series at 0.
var protectedCounters = map[string]prometheus.Counter{}

// countProtected records the answer to a request for a protected route:
// protectedAllowed, protectedUnauthenticated or protectedForbidden.
func countProtected(result string) {
	if c, ok := protectedCounters[result]; ok {
		c.Inc()
		return
	}
	metrics.protected.WithLabelValues(result).Inc()
}

// refusedResult is the protected_requests result for a request whose
// credentials failed for reason.
func refusedResult(reason string) string {
	if reason == reasonCrossSite {
		return protectedForbidden
	}
	return protectedUnauthenticated
}

// setOutboxPending publishes how many messages of channel k wait in the
// outbox; the outbox calls it when it counts them.
func setOutboxPending(k AliasKind, n int) {
	metrics.outboxPending.WithLabelValues(channelLabel(k)).Set(float64(n))
}
