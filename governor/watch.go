package governor

import (
	"sync/atomic"
	"time"
)

// transitionRing is how many level changes the ring keeps for the
// announcer; beyond it, behind a slow hook, the oldest are merged.
const transitionRing = 256

// transitions is a lock-free record of level changes, indexed by the
// sequence number in Governor.state: slot seq%transitionRing holds the state
// word (seq<<2 | level) stored by the Add or sampler whose compare-and-swap
// made that change. A slot only moves forward (a writer delayed past a
// newer lap does not overwrite it), so its stamp tells the reader whether it
// holds the entry wanted, one not yet written, or a later lap.
type transitions struct {
	slots [transitionRing]atomic.Uint64
}

func (r *transitions) record(st uint64) {
	slot := &r.slots[(st>>2)%transitionRing]
	for {
		old := slot.Load()
		if old>>2 >= st>>2 || slot.CompareAndSwap(old, st) {
			return
		}
	}
}

// limitNews is the latest re-detection outcome for the announcer to log:
// the watcher publishes it, the announcer logs it once (only the newest if
// several came while it was busy).
type limitNews struct {
	seq uint64
	lim Limit // the new limit (err == nil)
	err error // re-detection failed: the old limit stays
}

// watch is the watcher goroutine: it never runs user code or logs, so a
// blocked OnLevelChange or slog handler cannot keep waiters asleep or the
// limit stale.
func (g *Governor) watch() {
	defer g.done.Done()
	tick := time.NewTicker(g.opts.SampleInterval)
	defer tick.Stop()
	for {
		select {
		case <-g.closed:
			return
		case <-g.watchKick:
		case <-tick.C:
		}
		g.watchOnce()
	}
}

// watchOnce is one look: re-detect the limit when due, sample, recompute
// the level, wake waiters at Normal, and hand changes to the announcer.
func (g *Governor) watchOnce() {
	if g.opts.Limit == 0 {
		if now := g.opts.now(); now.Sub(g.lastLimitAt) >= g.opts.RefreshInterval {
			g.lastLimitAt = now
			g.redetect()
		}
	}
	if g.opts.Measure == MeasureProcessMemory {
		g.sample()
	}
	g.reconcile()
	st := g.state.Load()
	g.watched.Store(st)
	if Level(st&levelMask) == LevelNormal {
		g.waitMu.Lock()
		if !g.belowClosed {
			close(g.belowCh)
			g.belowClosed = true
		}
		g.waitMu.Unlock()
	}
	if st>>2 != g.announced.Load() || Level(st&levelMask) != LevelNormal || g.newsPending() {
		select {
		case g.announceKick <- struct{}{}:
		default:
		}
	}
}

// redetect re-reads the limit; a failed detection keeps the old one.
// Watcher only.
func (g *Governor) redetect() {
	lim, err := g.opts.detect()
	old := g.th.Load().limit
	if err != nil {
		g.newsSeq++
		g.limitNews.Store(&limitNews{seq: g.newsSeq, err: err})
		return
	}
	if lim.Bytes == old.Bytes && lim.Source == old.Source && lim.Path == old.Path {
		return
	}
	g.th.Store(newThresholds(lim, &g.opts))
	g.newsSeq++
	g.limitNews.Store(&limitNews{seq: g.newsSeq, lim: lim})
}

func (g *Governor) newsPending() bool {
	n := g.limitNews.Load()
	return n != nil && n.seq != g.newsAnnounced.Load()
}
