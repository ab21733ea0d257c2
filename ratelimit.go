package passwordless

import (
	"context"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
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
	// The per-IP limits count an IPv6 client by the network of this many
	// leading bits: one subscriber usually holds a whole /64 and can use
	// any address in it. IPv4-mapped addresses count as IPv4. 16 to 128.
	// Default: 64.
	IPv6Prefix int `json:"ipv6_prefix,omitempty"`
}

const defaultIPv6Prefix = 64

func checkIPv6Prefix(n int) error {
	if n < 16 || n > 128 {
		return fmt.Errorf("ipv6_prefix must be between 16 and 128, not %d", n)
	}
	return nil
}

// Limit is a number of events per window, counted as a GCRA (a token
// bucket): up to Count at once, then one more each Window/Count. Its cost
// does not grow with the events it has seen.
type Limit struct {
	// How many events the window allows at once.
	Count int `json:"count"`
	// The time in which the allowance refills.
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
	if rl.IPv6Prefix == 0 {
		rl.IPv6Prefix = defaultIPv6Prefix
	}
}

func (rl *RateLimitConfig) validate() error {
	if err := checkIPv6Prefix(rl.IPv6Prefix); err != nil {
		return fmt.Errorf("rate_limit: %w", err)
	}
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
// not reset the count, as NIST SP 800-63B asks). A run of lockoutThreshold
// failures locks the alias for lockoutFor; when the lock ends the run starts
// over. A successful login resets the count.
//
// Locks do not grow: a lockout that doubled with each further failure let
// one client keep anyone's account locked, one guess each time a lock
// ended. Only guesses against a live code count, so the number of locks an
// attacker can cause is bounded by the codes the alias may receive
// (per_alias × max_attempts failures per window), whatever the number of
// addresses; guessing is bounded by the same product.
const (
	lockoutThreshold = 10
	lockoutFor       = time.Minute
)

func tooMany(wait time.Duration) *apiError {
	secs := int64(math.Ceil(wait.Seconds()))
	return &apiError{status: http.StatusTooManyRequests, retryAfter: wait,
		detail: fmt.Sprintf("Too many requests. Try again in %d seconds.", secs),
		format: "Too many requests. Try again in %d seconds.", args: []any{secs}}
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

// clientKey is who the per-IP limits count a request against: its client
// IP, or for IPv6 the network of ipv6_prefix bits around it. Counting each
// IPv6 address apart gave anyone with a /64 (most IPv6 clients) 2^64
// budgets for SMS pumping and for guessing.
func (p *Passwordless) clientKey(r *http.Request) string {
	ip := clientIP(r)
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	addr = addr.Unmap().WithZone("")
	if addr.Is4() {
		return addr.String()
	}
	prefix, err := addr.Prefix(p.RateLimit.IPv6Prefix)
	if err != nil {
		return addr.String()
	}
	return prefix.String()
}

// ipLimit is the per-IP limit of a request.
func (p *Passwordless) ipLimit(r *http.Request) RateLimit {
	l := p.RateLimit.PerIP
	return RateLimit{Key: realmKey(p.Realm, "ip:"+p.clientKey(r)), Count: l.Count, Window: time.Duration(l.Window)}
}

// allowIP applies the per-IP limit to a request.
func (p *Passwordless) allowIP(r *http.Request) *apiError {
	l := p.ipLimit(r)
	wait, err := p.store.Hit(r.Context(), l, now())
	if err != nil {
		return p.internal("rate limit", err)
	}
	if wait > 0 {
		countRateLimited(limitName(l.Key))
		return tooMany(wait)
	}
	return nil
}

// sendLimits are the limits a code request for a passes: the interval
// between two codes to a, per alias, and per IP, the one many requests
// share, last. They hold alike for known, unknown and demo aliases, so
// they tell nothing about which is which. A request one of them refuses
// counts against none.
func (p *Passwordless) sendLimits(r *http.Request, a Alias) []RateLimit {
	rl := p.RateLimit
	limits := make([]RateLimit, 0, 3)
	if iv := time.Duration(*rl.SendInterval); iv > 0 {
		limits = append(limits, RateLimit{Key: realmKey(p.Realm, "interval:"+a.Key()), Count: 1, Window: iv})
	}
	limits = append(limits, RateLimit{Key: realmKey(p.Realm, "alias:"+mailbox(a)), Count: rl.PerAlias.Count, Window: time.Duration(rl.PerAlias.Window)})
	return append(limits, p.ipLimit(r))
}

// checkLock answers 429 while a is locked out, or while the client has
// used up its budget of failed exchanges.
func (p *Passwordless) checkLock(r *http.Request, a Alias) *apiError {
	t := now()
	wait, until, err := p.store.PeekLocked(r.Context(), p.failedIPLimit(p.clientKey(r)), p.aliasKey(a), t)
	if err != nil {
		return p.internal("rate limit", err)
	}
	if wait > 0 {
		countRateLimited(failedIPKey(p.clientKey(r)))
		return tooMany(wait)
	}
	if wait := until.Sub(t); wait > 0 {
		countExchange(a.Kind, loginLocked)
		return tooMany(wait)
	}
	return nil
}

func failedIPKey(ip string) string { return "failed-ip:" + ip }

// failedIPLimit is the budget of failed exchanges of one client address.
func (p *Passwordless) failedIPLimit(ip string) RateLimit {
	l := p.RateLimit.FailedPerIP
	return RateLimit{Key: realmKey(p.Realm, failedIPKey(ip)), Count: l.Count, Window: time.Duration(l.Window)}
}

// limitName is a limit's key without its realm, for metrics.
func limitName(key string) string {
	if rest, ok := strings.CutPrefix(key, "realm:"); ok {
		if _, k, ok := strings.Cut(rest, "/"); ok {
			return k
		}
	}
	return key
}

// failed counts a failed exchange from ip for a; the answer is the
// invalid-code one, or 429 if this failure locked the alias or spent the
// client's budget of failures. A guess at an alias that has no live code
// (liveCode false) costs the client's budget but not the alias's run: it
// could never have let anyone in, so it must not lock anyone out.
func (p *Passwordless) failed(ctx context.Context, ip string, a Alias, liveCode bool) *apiError {
	t := now()
	// A client past its budget of failures no longer counts against the
	// alias: one address cannot lock accounts at will, only ever a few.
	wait, err := p.store.Hit(ctx, p.failedIPLimit(ip), t)
	if err != nil {
		return p.internal("rate limit", err)
	}
	if wait > 0 {
		countRateLimited(failedIPKey(ip))
		return tooMany(wait)
	}
	if !liveCode {
		p.exchangeFailed(ctx, a, false)
		return invalidCode
	}
	_, until, err := p.store.Failure(ctx, p.aliasKey(a), lockoutThreshold, lockoutFor, t)
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

func (rl *RateLimitConfig) unmarshal(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "send_interval":
			var v string
			if err := oneArg(d, &v); err != nil {
				return err
			}
			dur, err := caddy.ParseDuration(v)
			if err != nil || dur < 0 {
				return d.Errf("send_interval: %q is not a duration (like 60s; 0s turns the check off)", v)
			}
			iv := caddy.Duration(dur)
			rl.SendInterval = &iv
		case "ipv6_prefix":
			n, err := intArg(d)
			if err != nil {
				return err
			}
			if err := checkIPv6Prefix(n); err != nil {
				return d.Err(err.Error())
			}
			rl.IPv6Prefix = n
		case "per_alias", "per_ip", "failed_per_ip":
			name := d.Val()
			args := d.RemainingArgs()
			if len(args) != 2 {
				return d.Errf("%s needs a count and a window, like: %s 5 1h", name, name)
			}
			n, err := strconv.Atoi(args[0])
			if err != nil || n < 1 {
				return d.Errf("%s: the count must be a whole number of at least 1, not %q", name, args[0])
			}
			w, err := caddy.ParseDuration(args[1])
			if err != nil || w <= 0 {
				return d.Errf("%s: the window must be a positive duration (like 1h), not %q", name, args[1])
			}
			l := &Limit{Count: n, Window: caddy.Duration(w)}
			switch name {
			case "per_alias":
				rl.PerAlias = l
			case "per_ip":
				rl.PerIP = l
			default:
				rl.FailedPerIP = l
			}
		default:
			return d.Errf("unrecognized rate_limit subdirective %q", d.Val())
		}
	}
	return nil
}
