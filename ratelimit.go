package passwordless

import (
	"context"
	"fmt"
	"math"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// RateLimitConfig bounds how often codes are sent. Limits are counted in
// the store, so they hold across restarts and across instances that share
// it. Over a limit the answer is 429 with Retry-After, and nothing is sent.
type RateLimitConfig struct {
	// Least time between two codes to one alias. `0s` turns this check
	// off. Default: 60s.
	SendInterval *caddy.Duration `json:"send_interval,omitempty"`
	// Codes sent to one alias per window. Default: 5 per 1h.
	PerAlias *Limit `json:"per_alias,omitempty"`
	// Code requests from one client IP per window, by Caddy's client IP
	// (which honours the server's trusted_proxies). Default: 30 per 1h.
	PerIP *Limit `json:"per_ip,omitempty"`
	// Failed code exchanges (wrong or expired codes, at /token, /verify
	// and the sign-in form) from one client IP per window. Past it the
	// client gets 429 and its guesses stop counting toward any alias's
	// lockout, so one address cannot keep other people's accounts locked.
	// Default: 20 per 1h.
	FailedPerIP *Limit `json:"failed_per_ip,omitempty"`
}

// Limit is a number of events per sliding window.
type Limit struct {
	// How many events the window allows.
	Count int `json:"count"`
	// The length of the window.
	Window caddy.Duration `json:"window"`
}

func (rl *RateLimitConfig) provision() {
	if rl.SendInterval == nil {
		d := caddy.Duration(60 * time.Second)
		rl.SendInterval = &d
	}
	if rl.PerAlias == nil {
		rl.PerAlias = &Limit{Count: 5, Window: caddy.Duration(time.Hour)}
	}
	if rl.PerIP == nil {
		rl.PerIP = &Limit{Count: 30, Window: caddy.Duration(time.Hour)}
	}
	if rl.FailedPerIP == nil {
		rl.FailedPerIP = &Limit{Count: 20, Window: caddy.Duration(time.Hour)}
	}
}

func (rl *RateLimitConfig) validate() error {
	if *rl.SendInterval < 0 {
		return fmt.Errorf("rate_limit: send_interval must not be negative")
	}
	for name, l := range map[string]*Limit{"per_alias": rl.PerAlias, "per_ip": rl.PerIP, "failed_per_ip": rl.FailedPerIP} {
		if l.Count < 1 || l.Window <= 0 || time.Duration(l.Window) > maxRateWindow {
			return fmt.Errorf("rate_limit: %s needs a count of at least 1 and a window from 1s to %s", name, maxRateWindow)
		}
	}
	return nil
}

// Lockout: wrong codes are counted per alias across codes (a new code does
// not reset the count, as NIST SP 800-63B asks). From lockoutThreshold
// consecutive failures on, each further failure locks the alias for a
// back-off that doubles, from lockoutBase up to lockoutMax. A successful
// login resets the count.
const (
	lockoutThreshold = 10
	lockoutBase      = time.Minute
	lockoutMax       = 24 * time.Hour
)

func lockoutFor(failures int) time.Duration {
	if failures < lockoutThreshold {
		return 0
	}
	exp := failures - lockoutThreshold
	if exp > 20 {
		return lockoutMax
	}
	return min(lockoutBase*time.Duration(1<<exp), lockoutMax)
}

func tooMany(wait time.Duration) *apiError {
	secs := int64(math.Ceil(wait.Seconds()))
	return &apiError{status: http.StatusTooManyRequests, retryAfter: wait,
		detail: fmt.Sprintf("Too many requests. Try again in %d seconds.", secs)}
}

// clientIP is Caddy's idea of the client address: the peer, or the
// forwarded address when the peer is a trusted proxy. A header alone can
// never choose the key a limit is counted under.
func clientIP(r *http.Request) string {
	if ip, ok := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string); ok && ip != "" {
		return ip
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// hit counts one event under key against l; over the limit it answers 429.
func (p *Passwordless) hit(ctx context.Context, key string, count int, window time.Duration) *apiError {
	wait, err := p.store.Hit(ctx, realmKey(p.Realm, key), count, window, now())
	if err != nil {
		return p.internal("rate limit", err)
	}
	if wait > 0 {
		countRateLimited(key)
		return tooMany(wait)
	}
	return nil
}

// allowIP applies the per-IP limit to a request.
func (p *Passwordless) allowIP(r *http.Request) *apiError {
	l := p.RateLimit.PerIP
	return p.hit(r.Context(), "ip:"+clientIP(r), l.Count, time.Duration(l.Window))
}

// allowSend applies the per-alias limits before a code is sent to a.
func (p *Passwordless) allowSend(ctx context.Context, a Alias) *apiError {
	rl := p.RateLimit
	if iv := time.Duration(*rl.SendInterval); iv > 0 {
		if e := p.hit(ctx, "interval:"+a.Key(), 1, iv); e != nil {
			return e
		}
	}
	return p.hit(ctx, "alias:"+a.Key(), rl.PerAlias.Count, time.Duration(rl.PerAlias.Window))
}

// checkLock answers 429 while a is locked out, or while the client has
// used up its budget of failed exchanges.
func (p *Passwordless) checkLock(r *http.Request, a Alias) *apiError {
	ctx := r.Context()
	l := p.RateLimit.FailedPerIP
	wait, err := p.store.Peek(ctx, realmKey(p.Realm, failedIPKey(clientIP(r))), l.Count, time.Duration(l.Window), now())
	if err != nil {
		return p.internal("rate limit", err)
	}
	if wait > 0 {
		countRateLimited(failedIPKey(clientIP(r)))
		return tooMany(wait)
	}
	until, err := p.store.LockedUntil(ctx, p.aliasKey(a))
	if err != nil {
		return p.internal("reading lockout", err)
	}
	if wait := until.Sub(now()); wait > 0 {
		countExchange(a.Kind, loginLocked)
		return tooMany(wait)
	}
	return nil
}

func failedIPKey(ip string) string { return "failed-ip:" + ip }

// failed counts a failed exchange from ip for a; the answer is the
// invalid-code one, or 429 if this failure locked the alias or spent the
// client's budget of failures.
func (p *Passwordless) failed(ctx context.Context, ip string, a Alias) *apiError {
	t := now()
	// A client past its budget of failures no longer counts against the
	// alias: one address cannot lock accounts at will, only ever a few.
	l := p.RateLimit.FailedPerIP
	wait, err := p.store.Hit(ctx, realmKey(p.Realm, failedIPKey(ip)), l.Count, time.Duration(l.Window), t)
	if err != nil {
		return p.internal("rate limit", err)
	}
	if wait > 0 {
		countRateLimited(failedIPKey(ip))
		return tooMany(wait)
	}
	_, until, err := p.store.Failure(ctx, p.aliasKey(a), lockoutFor, t)
	if err != nil {
		return p.internal("counting failure", err)
	}
	if !until.IsZero() {
		p.logger.Warn("alias locked after repeated wrong codes", zap.String("kind", string(a.Kind)), zap.Time("until", until))
		p.exchangeFailed(ctx, a, true)
		return tooMany(until.Sub(t))
	}
	p.exchangeFailed(ctx, a, false)
	return invalidCode
}

// sendTimer makes a send that is skipped (an unknown alias while
// registration is off) take as long as a real one, so response time does
// not tell whether an account exists. It learns the typical duration of
// real sends per channel, like caddyauth's fakePassword makes an unknown
// user cost one hash.
// It also remembers whether the channel's last real send failed: while it
// does, skipped sends fail the same way, so an outage does not tell known
// aliases (503) from unknown ones.
type sendTimer struct {
	mu      sync.Mutex
	ewma    time.Duration
	failing bool
}

func (s *sendTimer) failed() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failing = true
}

func (s *sendTimer) isFailing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failing
}

func (s *sendTimer) observe(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failing = false
	if s.ewma == 0 {
		s.ewma = d
		return
	}
	s.ewma += (d - s.ewma) / 8
}

func (s *sendTimer) imitate(ctx context.Context) {
	s.mu.Lock()
	d := s.ewma
	s.mu.Unlock()
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
