package wal

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
)

// Loss is a run of consecutive record ids that recovery cannot give back
// and that were not acknowledged: records lost to damage.
type Loss struct {
	From, To uint64 // inclusive
	Segment  string // the damaged or emptied segment file they were in; "" if no file holds them
	Reason   string
}

// Records is the number of records in the run.
func (l Loss) Records() uint64 { return l.To - l.From + 1 }

// String describes the loss.
func (l Loss) String() string {
	where := "no segment file holds them (deleted?)"
	if l.Segment != "" {
		where = l.Segment + ": " + l.Reason
	}
	if l.From == l.To {
		return fmt.Sprintf("record %d: %s", l.From, where)
	}
	return fmt.Sprintf("records %d-%d (%d): %s", l.From, l.To, l.Records(), where)
}

// ackView is the acknowledgement state recovery works from.
type ackView struct {
	state ackState
	// exact: the state holds every acknowledgement that a deleted segment
	// relied on, so an id missing from disk and from the state was lost.
	// False when the ack log is missing (with segments on disk),
	// unreadable, or damaged in the middle.
	exact   bool
	problem string // why not exact, or what was found ("" when fine)
	absent  bool   // there was no ack log at all
}

// planSegment is what recovery needs to know about one segment file.
type planSegment struct {
	name   string
	nameID uint64
	zero   bool // empty or all zeros: nothing was ever readable in it
	scan   segmentScan
	gaps   []span // ids covered by gap records (repairs by earlier versions)
}

// segmentVerdict is the plan for one segment file.
type segmentVerdict struct {
	keep     bool   // the file stays (its intact prefix, repaired if damaged)
	keepLast uint64 // last id kept
	damage   *Damage
}

// recoveryPlan is what recovery will do, computed without changing
// anything, so that Open and Inspect (vinewal verify) agree exactly.
type recoveryPlan struct {
	verdicts []segmentVerdict
	hi       uint64  // highest id known to have been issued
	losses   []Loss  // unacknowledged ids lost, in order
	lost     uint64  // records in losses
	unknown  []span  // ids missing whose fate an inexact ack state cannot tell
	acked    spanSet // the acknowledged set to write back: the state, gap records, losses and unknowns
}

// planRecovery decides what survives and counts, exactly, what does not:
// every id up to the highest one known to have been issued is either in an
// intact record kept, acknowledged, or lost. The highest id issued is the
// largest of the ack log's written mark, the ids acknowledged, the ids
// found on disk (after damage too), the records item entries name, and the
// ids segment names imply.
func planRecovery(av ackView, segs []planSegment) recoveryPlan {
	var p recoveryPlan
	p.acked.addAll(av.state.acked.spans)
	for _, s := range segs {
		p.acked.addAll(s.gaps)
	}
	// An item entry, like an ack, proves its id was issued.
	p.hi = max(av.state.written, p.acked.max(), av.state.items.maxID())
	var covered spanSet
	var prevLast uint64
	haveKept := false
	p.verdicts = make([]segmentVerdict, len(segs))
	for i, s := range segs {
		v := &p.verdicts[i]
		p.hi = max(p.hi, s.nameID-1)
		if s.zero {
			continue
		}
		sc := s.scan
		p.hi = max(p.hi, sc.lastID, sc.afterMax)
		if sc.headerOK {
			p.hi = max(p.hi, sc.firstID-1)
		}
		v.damage, v.keepLast = sc.damage, sc.lastID
		if v.damage == nil && haveKept && sc.firstID <= prevLast {
			v.damage = &Damage{Offset: 8, Reason: fmt.Sprintf("first id %d overlaps the previous segment (last id %d)", sc.firstID, prevLast)}
			v.keepLast = sc.firstID - 1
		}
		if v.keepLast < sc.firstID {
			continue // nothing to keep
		}
		v.keep = true
		covered.addAll(sc.keptRuns(v.keepLast)) // the ids of damaged records in between are not
		prevLast, haveKept = v.keepLast, true
	}
	var known spanSet
	known.addAll(covered.spans)
	known.addAll(p.acked.spans)
	if p.hi == 0 {
		return p
	}
	missing := known.missing(1, p.hi)
	if !av.exact {
		p.unknown = missing
		p.acked.addAll(missing)
		return p
	}
	for _, m := range missing {
		p.acked.add(m.lo, m.hi)
		p.losses = append(p.losses, attributeLoss(m, segs, p.verdicts)...)
		p.lost += m.hi - m.lo + 1
	}
	return p
}

// attributeLoss splits a missing run at segment file boundaries and names
// the file each piece was lost from, when one is to blame: a damaged or
// emptied segment whose kept records end right before the piece.
func attributeLoss(m span, segs []planSegment, verdicts []segmentVerdict) []Loss {
	var out []Loss
	for lo := m.lo; lo <= m.hi; {
		hi := m.hi
		owner := -1
		for i, s := range segs {
			first := s.nameID
			if !s.zero && s.scan.headerOK {
				first = s.scan.firstID
			}
			if first <= lo {
				owner = i
			} else if first <= hi {
				hi = first - 1 // the next file starts inside the run
			}
		}
		l := Loss{From: lo, To: hi}
		if owner >= 0 {
			s, v := segs[owner], verdicts[owner]
			first := s.nameID
			if !s.zero && s.scan.headerOK {
				first = s.scan.firstID
			}
			hole := (*scanHole)(nil)
			if !s.zero {
				hole = s.scan.holeOf(lo)
			}
			switch {
			case hole != nil:
				// Damaged records between intact ones of the file.
				l.To = min(l.To, hole.hi)
				l.Segment, l.Reason = s.name, hole.damage.String()
			case s.zero:
				l.Segment, l.Reason = s.name, "file empty or all zeros"
			case v.damage != nil && ((v.keep && lo == v.keepLast+1) || (!v.keep && lo == first)):
				l.Segment, l.Reason = s.name, v.damage.String()
			case lo == max(v.keepLast, first-1)+1:
				l.Segment, l.Reason = s.name, "records missing after the end of the file's records (cut at a record boundary, or never made durable)"
			}
		}
		out = append(out, l)
		if l.To == m.hi {
			break
		}
		lo = l.To + 1
	}
	return out
}

// readAckView reads dir's ack log for recovery or inspection. moveAside
// (Open) quarantines an unusable ACK path as ACK.corrupt; Inspect passes
// false and changes nothing. haveSegments says whether segment files exist
// (a missing ack log is then damage).
func readAckView(dir string, haveSegments, moveAside bool, logger *slog.Logger) (ackView, error) {
	var av ackView
	path := filepath.Join(dir, ackFileName)
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		av.absent = true
		av.exact = !haveSegments
		if haveSegments {
			av.problem = "the ack log (ACK) is missing"
		}
		return av, nil
	case err != nil:
		return av, err
	case !fi.Mode().IsRegular():
		av.problem = fmt.Sprintf("ACK is not a regular file (%v)", fi.Mode().Type())
	default:
		b, err := os.ReadFile(path)
		if err != nil {
			return av, err
		}
		st, err := parseAckLog(b)
		if err == nil {
			av.state = st
			av.exact = !st.damaged()
			if st.damaged() {
				av.problem = fmt.Sprintf("ACK: %d damaged entries before intact ones", st.badMid)
			}
			return av, nil
		}
		av.problem = "ACK: " + err.Error()
	}
	if moveAside {
		if err := quarantine(dir, ackFileName, logger); err != nil {
			return av, err
		}
	}
	return av, nil
}

// quarantine moves dir/name aside as <name>.corrupt (never overwriting an
// earlier one).
func quarantine(dir, name string, logger *slog.Logger) error {
	to := quarantineName(dir, name)
	if err := os.Rename(filepath.Join(dir, name), to); err != nil {
		return err
	}
	logger.Warn("wal: damaged file moved aside", "from", name, "to", filepath.Base(to))
	return nil
}

// quarantineIfNotFile moves dir/name aside if it exists and is not a
// regular file (a directory where a file must be, say).
func quarantineIfNotFile(dir, name string, logger *slog.Logger) error {
	fi, err := os.Lstat(filepath.Join(dir, name))
	if errors.Is(err, fs.ErrNotExist) || (err == nil && fi.Mode().IsRegular()) {
		return nil
	}
	if err != nil {
		return err
	}
	return quarantine(dir, name, logger)
}
