// Package batch owns the policy side of batching in VineQueue: how big the
// next batch should be (Sizer), how long to wait before retrying a failed
// Send (RetryPolicy, Backoff) and the retry loop itself (Attempt). It does
// not hold items: the queue's collector assembles batches, fires the three
// triggers (size reached, FlushInterval elapsed, Stop) and caps every batch at
// MaxBatchSize, asking a Sizer for the size when Config.Adaptive is set.
// The package imports nothing from the root package (which imports it); the
// root's RetryPolicy is an alias of this one.
//
// # Adaptive sizing
//
// A Sizer maximises delivery throughput while respecting the sink's knee —
// the size beyond which a Send's latency climbs steeply — and not growing
// batches for gains too small to be worth the extra wait of their items. It
// minimises, over ln(size) within [Min, Max],
//
//	J = ln(latency per item) + ε·ln(size)
//
// where latency per item is Σlatency/Σitems over an epoch of Window Sends
// (the inverse of one worker's throughput) and ε (LatencyWeight, default
// 0.02) prices size: a batch grows only while doubling it cuts the per-item
// cost by more than about ε·ln 2. Below the knee the per-call cost is
// amortised and J falls with size; past it J rises; the Sizer finds the turn.
//
// The search is a pattern search on ln(size) with a step per side: probe
// one step beside the accepted size (the base) for an epoch; a probe better
// than the base by more than one standard error of the difference (measured
// from the spread of the epoch's own Sends, so noise rarely moves the base)
// becomes the base and its side's step doubles; a clearly worse probe halves
// its side's step; an inconclusive one doubles it, since a longer step gives
// a larger signal. At a sharp knee this leaves a short step above (probes
// there are costly) and a longer one below (probes there are cheap). After
// both sides failed clearly the base is held and re-measured for 1, 2, 4 …
// 8 epochs before the next probes, so a converged Sizer spends few epochs off
// its optimum; an inconclusive side halves the hold instead, since the
// search is not over. A re-measured base that scores differently by more
// than the noise means the sink changed: steps and hold are reset. A probe
// already 5 % worse after 3 Sends is abandoned early.
//
// Two fast paths cut the size in half at once, like the multiplicative
// decrease of AIMD or of Vector's adaptive request concurrency: a surge (two
// Sends in one epoch slower than twice what the last epoch predicts for their
// size — more than noise: the sink changed) and a Send error, which caps the
// target at half the failed batch (so the retries of one batch cut once, and
// a sink that keeps failing walks the size down one halving per new batch).
// A surge during a probe just fails the probe. After a cut the first probe is upwards: if the
// knee moved down it is abandoned within 3 Sends, and if the per-call cost
// rose (which also surges) bigger batches are the cure.
//
// When the batches sent are smaller than the target (the input rate or the
// flush interval limits them, not the Sizer), nothing is probed and the
// target is pulled down to 10 % above what is actually sent, so a lull does
// not leave a stale huge target that would release oversized batches later.
//
// Measured on the sink model (internal/sinkmodel, simulated time, see
// adaptive_test.go), 20 s runs, start 1000: 97.8–99.8 % of the throughput of
// the best fixed size found by a sweep, for 1 and 4 workers, knees at 500 and
// 2000 items, a soft knee, no knee, and ±10 % latency noise (worst of 10
// seeds 96.3 %); re-convergence (a 100 ms window at >= 95 % of the new best)
// 0.2–1 s after the knee moves 2000→500 or 500→2000 or the per-call cost
// changes 5× either way (with noise, worst of 10 seeds 1.5 s). The seed
// design's ±10 % rule reaches 30–67 % on the same runs. Not handled as
// well: very noisy sinks (±30 % uniform noise: 93–94 % with the default
// Window of 8; a longer Window helps).
//
// # Retries
//
// Backoff gives the n-th wait: InitialBackoff·Multiplier^(n−1), capped at
// MaxBackoff, spread uniformly over ±Jitter, and never above MaxBackoff after
// the spread. Randomness comes from a caller-supplied math/rand/v2 Source so
// tests are deterministic. Attempt runs the loop: at most MaxAttempts calls,
// panics recovered into *PanicError (errors.Is ErrSendPanic), waits on a
// timer that ctx interrupts, Permanent errors not retried, and the final
// error wrapping both ErrAttemptsExhausted and the last Send error.
//
// # Use
//
// The collector reads sizer.Size() when it starts a batch (and caps it at
// Max); each Send worker delivers through Attempt and reports every attempt:
//
//	err := batch.Attempt(ctx, policy, func(ctx context.Context) error {
//		start := time.Now()
//		err := send(ctx, items)
//		sizer.Observe(len(items), time.Since(start), err)
//		return err
//	}, func(attempt int, err error) { retries.Add(1) })
//
// An attempt that panics unwinds past Observe and is not reported; Attempt
// still counts it as a failed attempt.
//
// # Invariants
//
//   - Sizer.Size is always within [Min, Max] and at least 1, whatever is
//     observed (zero or negative latencies and sizes are tolerated).
//   - Backoff.Delay is never negative and never above MaxBackoff.
//   - Attempt never calls send with a ctx that is already done, never sleeps
//     past ctx, and returns nil only if a send returned nil.
//
// # Concurrency
//
// Sizer: Size (one atomic load) and Observe (a short mutex section, no
// allocation) are safe to call concurrently: the collector calls Size, every
// Send worker calls Observe after each attempt. SizerConfig.Concurrency tells
// the Sizer how many batches may be in flight under an old target, so it
// skips their observations after each change. Backoff and RetryPolicy are
// immutable values. Attempt keeps no state and may run on many goroutines;
// onRetry runs on the goroutine that called Attempt.
package batch
