package governor

import (
	"math"
	"time"
)

// announcer is the state of the announcer goroutine, the only goroutine that
// logs or calls OnLevelChange: announcements are therefore in order and one
// at a time, and a hook or slog handler that blocks delays only them.
type announcer struct {
	seq      uint64 // last state seq announced
	level    Level  // level as of seq
	limit    Limit  // limit as of the last "limit changed" message
	lastWarn [LevelHard + 1]time.Time
	warned   bool // a warning was logged since the level was last Normal
}

func (g *Governor) announce() {
	defer g.done.Done()
	for {
		select {
		case <-g.closed:
			// What changed before Close is still announced; what changes
			// during this last pass is not waited for.
			g.announceUpTo(g.state.Load() >> 2)
			return
		case <-g.announceKick:
			g.announceOnce()
		}
	}
}

// announceOnce announces every level change recorded so far, in order, then
// the repeated warning while the level stays raised, then a limit
// re-detection outcome. It stops early, leaving the rest to announce's
// final pass, when Close is called.
func (g *Governor) announceOnce() { g.announceUpTo(math.MaxUint64) }

// announceUpTo is announceOnce for the changes numbered up to end; with an
// end below MaxUint64 (the final pass) it does not stop at Close.
func (g *Governor) announceUpTo(end uint64) {
	a := &g.ann
	for a.seq < min(end, g.state.Load()>>2) {
		s := a.seq + 1
		v := g.ring.slots[s%transitionRing].Load()
		if vs := v >> 2; vs < s {
			// Its compare-and-swap is done but its record not yet: the
			// watcher kicks us again while announced lags state.
			break
		} else if vs > s {
			// Lapped while a hook was slow: the changes up to vs-ring are
			// gone. Skip to the oldest the ring can still hold; the next
			// announced change goes from a.level, so from/to still chain.
			a.seq = vs - transitionRing
			continue
		}
		a.seq = s
		if to := Level(v & levelMask); to != a.level {
			from := a.level
			a.level = to
			g.say(from, to)
		}
		g.announced.Store(a.seq)
		if end == math.MaxUint64 {
			select {
			case <-g.closed:
				return
			default:
			}
		}
	}
	g.announced.Store(a.seq)
	if a.level != LevelNormal {
		g.warn(a.level, "memory pressure")
	}
	if n := g.limitNews.Load(); n != nil && n.seq != g.newsAnnounced.Load() {
		g.newsAnnounced.Store(n.seq)
		if n.err != nil {
			g.log.Warn("vinequeue: memory limit re-detection failed; keeping the old limit",
				"err", n.err, "limit", a.limit.Bytes, "source", string(a.limit.Source))
		} else {
			g.log.Info("vinequeue: memory limit changed",
				"from", a.limit.Bytes, "to", n.lim.Bytes, "source", string(n.lim.Source), "path", n.lim.Path)
			a.limit = n.lim
		}
	}
}

// say announces one change: a warning on a rise, an Info "relieved" on the
// way back to Normal if a warning was logged, then OnLevelChange.
func (g *Governor) say(from, to Level) {
	a := &g.ann
	if to > from {
		g.warn(to, "memory pressure rising")
	} else if to == LevelNormal && a.warned {
		a.warned = false
		s := g.Stats()
		g.log.Info("vinequeue: memory pressure relieved",
			"level", to.String(), "used", s.Used, "limit", s.Limit, "source", string(s.Source))
	}
	if g.opts.OnLevelChange != nil {
		g.opts.OnLevelChange(from, to)
	}
}

// warn logs a warning for level unless one was logged for the same level
// within WarnInterval. Each level has its own budget so that reaching Hard is
// reported even right after a Soft warning.
func (g *Governor) warn(level Level, msg string) {
	if level == LevelNormal || level > LevelHard {
		return
	}
	a := &g.ann
	now := g.opts.now()
	if last := a.lastWarn[level]; !last.IsZero() && now.Sub(last) < g.opts.WarnInterval {
		return
	}
	a.lastWarn[level] = now
	a.warned = true
	s := g.Stats()
	g.log.Warn("vinequeue: "+msg,
		"level", level.String(), "used", s.Used, "held", s.BytesHeld, "process", s.ProcessBytes,
		"soft", s.Soft, "hard", s.Hard, "limit", s.Limit, "source", string(s.Source), "measure", s.Measure.String())
}
