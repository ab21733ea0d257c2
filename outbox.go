package passwordless

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Delivery is queued. A code request stores the code and its message in
// one transaction and answers; workers deliver from the store in the
// background. So a request takes the same time whatever the alias (a
// known one, an unknown one that is never sent to, a demo one) and
// whatever the provider does, and a queued message survives a restart.
const (
	// outboxWorkers is the number of workers per channel and handler.
	outboxWorkers = 2
	// outboxBatch is how many messages a worker claims at once; for email
	// they go over one SMTP connection.
	outboxBatch = 16
	// outboxLease is how long a claim keeps a message from other workers
	// and instances. A worker that died holding it is replaced when it ends.
	outboxLease = 2 * time.Minute
	// outboxPoll is how often an idle worker looks for messages that other
	// instances queued or that are due for a retry.
	outboxPoll = time.Second
	// finishEvery is how often a long burst deletes the messages it has
	// sent, rather than at its end, so that no sent code waits in the
	// store (see sqliteStore.FinishOutbox) for slow sends after it.
	finishEvery = 500 * time.Millisecond
	// outboxGather is how long a woken worker lets messages gather, so that
	// a busy queue is claimed and finished in batches, not one by one.
	outboxGather = 2 * time.Millisecond
	// Retries wait retryBase, doubling up to retryMax, while the code lives.
	retryBase = time.Second
	retryMax  = time.Minute
	// probeEvery is the least time between two probes of one channel's
	// provider, so that neither traffic nor polling /health can make the
	// plugin hammer the provider or trip its limits.
	probeEvery = 10 * time.Second
)

// A sender's error says two things. errTransient: a retry may succeed;
// without it the message is dropped and its code voided. errBadRecipient:
// the reply is about this one message (its recipient, or its request),
// not about the provider, so the rest of a burst goes on.
var (
	errTransient = errors.New("transient delivery failure")
	// errNotTried marks messages released unsent, at shutdown or when a
	// burst stops early; they are due again at once and count as nothing.
	errNotTried = errors.New("not tried")
)

// outboxStore is what the workers need of the Store.
type outboxStore interface {
	ClaimOutbox(ctx context.Context, queue string, n int, now time.Time, lease time.Duration) ([]OutboxMessage, error)
	LiveCodes(ctx context.Context, ids []string, now time.Time) (map[string]bool, error)
	RetryOutbox(ctx context.Context, id string, next time.Time) error
	FinishOutbox(ctx context.Context, ids []string) error
	DeleteCode(ctx context.Context, id string) error
	PendingMessages(ctx context.Context, now time.Time) (map[AliasKind]int, error)
}

// outbox runs the delivery workers of one handler.
type outbox struct {
	store   outboxStore
	senders map[AliasKind]Sender
	logger  *zap.Logger
	message func(OutboxMessage) Message // what the sender gets for a queued message
	queues  map[AliasKind]string
	wake    map[AliasKind]chan struct{}
	health  map[AliasKind]*channelHealth
	pending *pendingEntry
	ctx     context.Context
	stop    context.CancelFunc
	workers sync.WaitGroup
}

// newOutbox starts the workers for the senders' channels; queue names the
// queue of a channel.
func newOutbox(store outboxStore, senders map[AliasKind]Sender, logger *zap.Logger, queue func(AliasKind) string, message func(OutboxMessage) Message) *outbox {
	ctx, stop := context.WithCancel(context.Background())
	o := &outbox{store: store, senders: senders, logger: logger, message: message,
		queues: map[AliasKind]string{}, wake: map[AliasKind]chan struct{}{},
		health: map[AliasKind]*channelHealth{}, ctx: ctx, stop: stop}
	for kind := range senders {
		o.queues[kind] = queue(kind)
		o.wake[kind] = make(chan struct{}, 1)
		o.health[kind] = new(channelHealth)
	}
	// The maps are complete before any worker reads them.
	for kind := range senders {
		for range outboxWorkers {
			o.workers.Add(1)
			go o.run(kind)
		}
		o.workers.Add(1)
		go o.watch(kind)
	}
	o.pending = pendingGauge.add(store, logger)
	return o
}

// failing reports whether kind's provider was found in trouble by its
// last probe.
func (o *outbox) failing(kind AliasKind) bool { return o.health[kind].failing() }

// close stops the workers; a message in flight is released for the next
// worker, here after a restart or on another instance.
func (o *outbox) close() {
	o.stop()
	o.workers.Wait()
	pendingGauge.remove(o.pending)
}

// A channel's state (failing or not) is decided by probes alone, never by
// how a delivery went. Deliveries are made only for aliases that may sign
// in, so if their failures turned the channel to 503, an outage would tell
// an attacker which aliases those are; and one recipient's trouble would
// close the channel for everyone. A probe asks the provider the same
// question whoever the message is for (SMTP: connection, TLS, login and
// MAIL FROM; Twilio: the account), and probes run when a new message of
// any alias, deliverable or not, is first taken from the queue, while the
// channel is failing, and when /health is asked while it is. The price:
// an outage that only real sends meet (say, Twilio refusing every message
// while it answers for the account) is retried and counted in
// delivery_failures_total, but does not turn the channel to 503.

// check probes kind's provider when no probe ran in the last probeEvery,
// and reports whether the channel is failing.
func (o *outbox) check(ctx context.Context, kind AliasKind) bool {
	h := o.health[kind]
	pr, ok := o.senders[kind].(prober)
	if !ok || !h.due(now()) {
		return h.failing()
	}
	err := pr.Probe(ctx)
	if o.ctx.Err() != nil || errors.Is(ctx.Err(), context.Canceled) {
		// Stopping, or the health client went away: that says nothing
		// of the provider.
		return h.failing()
	}
	if err != nil {
		o.logger.Warn("provider failing", zap.String("channel", string(kind)), zap.Error(err))
	}
	h.set(err != nil)
	return err != nil
}

// probeSoon probes kind's provider in the background when a probe is due,
// without delaying the deliveries.
func (o *outbox) probeSoon(kind AliasKind) {
	if _, ok := o.senders[kind].(prober); !ok || !o.health[kind].dueSoon(now()) {
		return
	}
	o.workers.Add(1)
	go func() {
		defer o.workers.Done()
		o.check(o.ctx, kind)
	}()
}

// watch probes a failing channel every probeEvery until it answers again,
// whether or not anything waits in the queue.
func (o *outbox) watch(kind AliasKind) {
	defer o.workers.Done()
	t := time.NewTicker(outboxPoll)
	defer t.Stop()
	for {
		select {
		case <-o.ctx.Done():
			return
		case <-t.C:
		}
		if o.health[kind].failing() {
			o.check(o.ctx, kind)
		}
	}
}

// outboxQueue names the messages that this handler's configuration sends
// for kind. Handlers of the same realm with the same prefix and the same
// message settings (sender, templates, link) share a queue: a reload, a
// restart or another instance delivers what this one queued. The
// transport (server, credentials, timeouts) is left out, so a fixed SMTP
// address still delivers what waited for it. Realms never share one: each
// realm's mail goes out through its own sender. No secret goes into the
// name.
func (p *Passwordless) outboxQueue(kind AliasKind) string {
	id := map[string]any{"prefix": p.Prefix, "channel": kind}
	if p.Realm != defaultRealm {
		// Left out for the default realm, whose queue keeps its old name
		// across an upgrade.
		id["realm"] = p.Realm
	}
	switch kind {
	case KindEmail:
		e := p.Email
		id["email"] = []string{e.From, e.Subject, e.TextTemplate, e.HTMLTemplate, e.LinkBase}
	case KindMobile:
		id["sms"] = []string{p.SMS.Message}
		if t := p.SMS.Twilio; t != nil {
			id["twilio"] = []string{t.AccountSID, t.From, t.MessagingServiceSID}
		}
	}
	b, _ := json.Marshal(id)
	sum := sha256.Sum256(b)
	return string(kind) + ":" + hex.EncodeToString(sum[:8])
}

// pendingGauge publishes outbox_pending. Every outboxPoll it asks each
// store in use once, however many handlers share it, and the gauge is the
// sum over the stores.
var pendingGauge = new(pendingStores)

type pendingStores struct {
	mu      sync.Mutex
	entries []*pendingEntry
	stop    chan struct{} // closes the poller; nil when none runs
}

// pendingEntry is one store and what it counted last.
type pendingEntry struct {
	store  outboxStore
	logger *zap.Logger
	users  int
	counts map[AliasKind]int
	// countFailed keeps a store that fails every poll from logging it
	// every second; ps.mu guards it.
	countFailed repeatedFailure
}

// add counts store in, starting the poller if it is the first.
func (ps *pendingStores) add(store outboxStore, logger *zap.Logger) *pendingEntry {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	for _, e := range ps.entries {
		if e.store == store {
			e.users++
			return e
		}
	}
	e := &pendingEntry{store: store, logger: logger, users: 1}
	ps.entries = append(ps.entries, e)
	if ps.stop == nil {
		ps.stop = make(chan struct{})
		go ps.poll(ps.stop)
	}
	return e
}

// remove undoes add; the poller stops with the last store.
func (ps *pendingStores) remove(e *pendingEntry) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if e.users--; e.users > 0 {
		return
	}
	ps.entries = slices.DeleteFunc(ps.entries, func(x *pendingEntry) bool { return x == e })
	ps.publish()
	if len(ps.entries) == 0 && ps.stop != nil {
		close(ps.stop)
		ps.stop = nil
	}
}

func (ps *pendingStores) poll(stop chan struct{}) {
	t := time.NewTicker(outboxPoll)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		ps.mu.Lock()
		entries := slices.Clone(ps.entries)
		ps.mu.Unlock()
		for _, e := range entries {
			ctx, cancel := context.WithTimeout(context.Background(), outboxPoll)
			n, err := e.store.PendingMessages(ctx, now())
			cancel()
			ps.mu.Lock()
			if err == nil {
				e.counts = n
			}
			if err == nil || slices.Contains(ps.entries, e) { // not a store closed meanwhile
				e.countFailed.observe(e.logger, zapcore.WarnLevel, "counting queued messages", err, time.Now())
			}
			ps.mu.Unlock()
		}
		ps.mu.Lock()
		select {
		case <-stop: // the last store went while counting
		default:
			ps.publish()
		}
		ps.mu.Unlock()
	}
}

// publish sets the gauge to the sum of the last counts; ps.mu is held.
func (ps *pendingStores) publish() {
	for _, kind := range metricChannels {
		n := 0
		for _, e := range ps.entries {
			n += e.counts[kind]
		}
		setOutboxPending(kind, n)
	}
}

// notify wakes a worker of kind for a message just queued.
func (o *outbox) notify(kind AliasKind) {
	select {
	case o.wake[kind] <- struct{}{}:
	default:
	}
}

func (o *outbox) run(kind AliasKind) {
	defer o.workers.Done()
	poll := time.NewTicker(outboxPoll)
	defer poll.Stop()
	var failed repeatedFailure // a store that fails would fail every poll
	for {
		n, err := o.deliverDue(kind)
		if o.ctx.Err() == nil {
			failed.observe(o.logger, zapcore.ErrorLevel, "claiming queued messages", err, time.Now(), zap.String("channel", string(kind)))
		}
		if n == outboxBatch {
			continue // there may be more
		}
		select {
		case <-o.ctx.Done():
			return
		case <-o.wake[kind]:
			time.Sleep(outboxGather)
		case <-poll.C:
		}
	}
}

// deliverDue claims the due messages of kind and delivers or drops each;
// it returns how many it claimed, or why it could not claim them.
func (o *outbox) deliverDue(kind AliasKind) (int, error) {
	store := o.store
	msgs, err := store.ClaimOutbox(o.ctx, o.queues[kind], outboxBatch, now(), outboxLease)
	if err != nil || len(msgs) == 0 {
		return 0, err
	}
	// Every new message, whoever it is for, may probe the provider; a
	// retry may not, as only deliverable messages are retried.
	if slices.ContainsFunc(msgs, func(m OutboxMessage) bool { return m.Attempts == 1 }) {
		o.probeSoon(kind)
	}
	// Bookkeeping finishes even when the workers are stopping.
	ctx := context.WithoutCancel(o.ctx)
	t := now()
	var finished []string
	var candidates []OutboxMessage
	var ids []string
	for _, m := range msgs {
		switch {
		case !m.Deliver:
			o.dropped(m, "not to be sent")
			finished = append(finished, m.ID)
		case !t.Before(m.ExpiresAt):
			o.dropped(m, "expired")
			finished = append(finished, m.ID)
		default:
			candidates = append(candidates, m)
			ids = append(ids, m.ID)
		}
	}
	live, err := store.LiveCodes(ctx, ids, t)
	if err != nil {
		o.logger.Error("reading codes of queued messages", zap.Error(err))
		live = nil // retried below, as if the provider had failed
	}
	var toSend []OutboxMessage
	for _, m := range candidates {
		switch {
		case live == nil:
			if !o.retry(ctx, m, errTransient) {
				o.dropped(m, "expired")
				finished = append(finished, m.ID)
			}
		case !live[m.ID]:
			// A newer code replaced it, it was used or it expired:
			// sending it would only confuse.
			o.dropped(m, "superseded")
			finished = append(finished, m.ID)
		default:
			toSend = append(toSend, m)
		}
	}
	finished = append(finished, o.send(ctx, kind, toSend)...)
	if err := store.FinishOutbox(ctx, finished); err != nil {
		o.logger.Error("deleting delivered messages", zap.Error(err))
	}
	return len(msgs), nil
}

// send delivers msgs in one burst and returns the ids that are done with,
// sent or dropped. After a transient failure of the provider the rest of
// the burst waits for the retry; after one recipient's, it goes on.
func (o *outbox) send(ctx context.Context, kind AliasKind, msgs []OutboxMessage) (finished []string) {
	if len(msgs) == 0 {
		return nil
	}
	// A burst ends well before the lease, so no other worker can claim
	// a message that is still being sent.
	sendCtx, cancel := context.WithTimeout(o.ctx, outboxLease/2)
	defer cancel()
	b := openBurst(o.senders[kind])
	defer b.Close()
	flushed, lastFlush := 0, time.Now()
	defer func() { finished = finished[flushed:] }()
	var stopped error
	for _, m := range msgs {
		if stopped == nil && sendCtx.Err() != nil {
			stopped = errNotTried
		}
		if stopped != nil {
			if !o.retry(ctx, m, stopped) {
				o.dropped(m, "expired")
				finished = append(finished, m.ID)
			}
			continue
		}
		start := time.Now()
		err := b.Send(sendCtx, o.message(m))
		switch {
		case err == nil:
			o.sent(m, time.Since(start))
			finished = append(finished, m.ID)
			if time.Since(lastFlush) >= finishEvery {
				if err := o.store.FinishOutbox(ctx, finished[flushed:]); err != nil {
					o.logger.Error("deleting delivered messages", zap.Error(err))
				} else {
					flushed = len(finished)
				}
				lastFlush = time.Now()
			}
		case o.ctx.Err() != nil:
			// Stopping: not the provider's fault.
			o.retry(ctx, m, errNotTried)
			stopped = errNotTried
		case errors.Is(err, errTransient):
			retried := o.retry(ctx, m, err)
			o.failed(m, err, time.Since(start))
			if !retried {
				o.dropped(m, "expired")
				finished = append(finished, m.ID)
			}
			if !errors.Is(err, errBadRecipient) {
				stopped = err
			}
		default:
			// Permanent: the provider refused this message for good. Its
			// code can never arrive, so nobody may redeem it.
			if err := o.store.DeleteCode(ctx, m.ID); err != nil {
				o.logger.Error("voiding undelivered code", zap.Error(err))
			}
			o.failed(m, err, time.Since(start))
			o.dropped(m, "refused")
			finished = append(finished, m.ID)
		}
	}
	return finished
}

// retry makes m due again: at once when it was not tried, else after a
// back-off that doubles with each attempt. It reports false, changing
// nothing, when that would be past the code's expiry.
func (o *outbox) retry(ctx context.Context, m OutboxMessage, why error) bool {
	next := now()
	if why != errNotTried {
		wait := retryBase << min(max(m.Attempts-1, 0), 16)
		next = next.Add(min(wait, retryMax))
		if !next.Before(m.ExpiresAt) {
			return false
		}
	}
	if err := o.store.RetryOutbox(ctx, m.ID, next); err != nil {
		o.logger.Error("rescheduling a queued message", zap.Error(err))
	}
	return true
}

// sent, failed and dropped are the one place each where a delivery
// outcome is recorded.

// sent records a message the provider accepted.
func (o *outbox) sent(m OutboxMessage, took time.Duration) {
	countDelivery(m.Channel, m.Purpose, took, nil)
	o.logger.Debug("code delivered", zap.String("channel", string(m.Channel)), zap.String("purpose", m.Purpose),
		zap.Int("attempt", m.Attempts), zap.Duration("took", took))
}

// failed records a delivery attempt that failed. Errors name the provider's
// error code and never carry the code, a secret or the recipient. A
// refused recipient is the user's input: worth no more than Info.
func (o *outbox) failed(m OutboxMessage, err error, took time.Duration) {
	countDelivery(m.Channel, m.Purpose, took, err)
	level := zap.ErrorLevel
	if errors.Is(err, errBadRecipient) {
		level = zap.InfoLevel
	}
	o.logger.Log(level, "delivery failed", zap.String("channel", string(m.Channel)), zap.String("purpose", m.Purpose),
		zap.Int("attempt", m.Attempts), zap.Bool("transient", errors.Is(err, errTransient)),
		zap.Duration("took", took), zap.Error(err))
}

// dropped records a message removed unsent, for reason.
func (o *outbox) dropped(m OutboxMessage, reason string) {
	o.logger.Debug("queued message dropped", zap.String("channel", string(m.Channel)), zap.String("reason", reason),
		zap.Int("attempts", m.Attempts))
}

// message is what the sender gets for a queued message.
func (p *Passwordless) message(m OutboxMessage) Message {
	msg := Message{To: m.To, Code: m.Code, Purpose: m.Purpose, TTL: time.Duration(p.CodeTTL), Lang: m.Lang, Site: p.pages.site}
	if m.Channel == KindEmail && m.Purpose == purposeLogin && p.Email.LinkBase != "" {
		// The code rides in the fragment: browsers never send it, so no
		// server or access log sees it, and opening the link only fills
		// the form, so mail scanners that follow links cannot use it up.
		msg.Link = p.Email.LinkBase + p.Prefix + "/login?alias=" + url.QueryEscape(m.To)
		if m.Lang != "" && m.Lang != p.pages.offered[0] {
			msg.Link += "&lang=" + url.QueryEscape(m.Lang)
		}
		msg.Link += "#code=" + m.Code
	}
	return msg
}

// channelHealth is a channel's state as its provider's last probe found
// it. It is kept per instance: every instance's workers meet the same
// provider.
type channelHealth struct {
	mu        sync.Mutex
	down      bool
	lastProbe time.Time
}

// due reports whether a probe may run at t, and if so notes it.
func (h *channelHealth) due(t time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.lastProbe.IsZero() && t.Sub(h.lastProbe) < probeEvery {
		return false
	}
	h.lastProbe = t
	return true
}

// dueSoon reports whether a probe would be due at t, noting nothing.
func (h *channelHealth) dueSoon(t time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.lastProbe.IsZero() || t.Sub(h.lastProbe) >= probeEvery
}

func (h *channelHealth) set(down bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.down = down
}

func (h *channelHealth) failing() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.down
}

// deliveryFailing is the answer to every code request for a channel whose
// deliveries are failing, known alias or not, so an outage tells nobody
// which accounts exist. It names no server and no secret.
var deliveryFailing = &apiError{status: http.StatusServiceUnavailable, detail: "The code could not be sent. Please try again later.", retryAfter: probeEvery}
