package wal

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// deadScan is one dead-letter file verified, before recovery decides
// anything about it.
type deadScan struct {
	sf   segmentFile
	data []byte
	plan planSegment
}

// scanDeadDir reads the dead-letter directory dir: its ack log (moved
// aside if unusable and moveAside) and every dead-letter file, verified.
func scanDeadDir(dir string, limit int, moveAside bool, logger *slog.Logger) (ackView, []deadScan, error) {
	files, err := listSegments(dir)
	if err != nil {
		return ackView{}, nil, err
	}
	av, err := readAckView(dir, len(files) > 0, moveAside, logger)
	if err != nil {
		return av, nil, err
	}
	out := make([]deadScan, len(files))
	for i, sf := range files {
		data, err := os.ReadFile(filepath.Join(dir, sf.name))
		if err != nil {
			return av, nil, err
		}
		sc, _, _, zero := scanDeadFile(data, sf.firstID, limit)
		out[i] = deadScan{sf: sf, data: data, plan: planSegment{name: sf.name, nameID: sf.firstID, zero: zero, scan: sc}}
	}
	return av, out, nil
}

func deadPlanSegments(scans []deadScan) []planSegment {
	ps := make([]planSegment, len(scans))
	for i, s := range scans {
		ps[i] = s.plan
	}
	return ps
}

// recoverDead recovers the dead-letter log the way recover does the main
// log, with the same plan: every dead-letter id up to the highest issued
// is in an intact file, purged, or lost (counted in Stats.DeadCorrupt);
// damaged files are moved aside (or cut to their intact record), the ack
// log is rewritten first, and purged files still present are deleted.
func (l *Log) recoverDead() error {
	d := &l.dead
	d.dir = filepath.Join(l.dir, deadDirName)
	d.next = 1
	d.live = make(map[uint64]int64)
	fi, err := os.Lstat(d.dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil // created by the first dead letter
	case err != nil:
		return fmt.Errorf("wal: %w", err)
	case !fi.IsDir():
		if err := quarantine(l.dir, deadDirName, l.log); err != nil {
			return fmt.Errorf("wal: %w", err)
		}
		l.stats.quarantined.Add(1)
		return syncDir(l.dir)
	}
	if err := l.clearDeadStrays(); err != nil {
		return fmt.Errorf("wal: %w", err)
	}
	av, scans, err := scanDeadDir(d.dir, l.deadReadLimit(), true, l.log)
	if err != nil {
		return fmt.Errorf("wal: dead letters: %w", err)
	}
	if av.problem != "" {
		l.stats.quarantined.Add(1)
		l.log.Error("wal: dead-letter ack log damaged; purged dead letters may reappear, and ids missing from disk cannot be told purged or lost", "problem", av.problem)
	}
	p := planRecovery(av, deadPlanSegments(scans))
	// A damaged dead-letter file stays where it is, live: DeadLetters lists
	// it with its Damage until it is purged. Moved aside, it would vanish
	// from the list the operator acts on, and a queue parking keys would
	// take the letters behind it for released. Its id is therefore not
	// tombstoned, and not reused; it counts in DeadCorrupt at every Open
	// that finds it (an emptied or missing file is lost, counted once).
	damaged := make(map[int]bool)
	for i, s := range scans {
		v, id := p.verdicts[i], s.sf.firstID
		if v.keep || s.plan.zero || v.damage == nil || av.state.acked.contains(id) {
			continue
		}
		damaged[i] = true
		if p.acked.contains(id) {
			p.acked = p.acked.without(id)
			if av.exact {
				p.lost-- // the plan counted it lost; it is counted below
			}
		}
		p.hi = max(p.hi, id)
	}
	d.corrupt.Add(p.lost + uint64(len(damaged)))
	for _, loss := range p.losses {
		l.log.Error("wal: dead letters lost", "from", loss.From, "to", loss.To, "count", loss.Records(), "file", loss.Segment, "reason", loss.Reason)
	}
	for i, s := range scans {
		if v := p.verdicts[i]; v.keep && v.keepLast > av.state.written {
			if err := syncPath(filepath.Join(d.dir, s.sf.name)); err != nil {
				return fmt.Errorf("wal: %w", err)
			}
		}
	}
	if err := l.opts.inject("dlq-ack"); err != nil {
		return fmt.Errorf("wal: %w", err)
	}
	a, err := rewriteAckLog(d.dir, av.state.gen+1, p.acked.spans, nil, p.hi)
	if err != nil {
		return fmt.Errorf("wal: dead-letter ack log: %w", err)
	}
	d.ack = a
	// One more flush before anything is deleted on its strength.
	if err := a.append(appendAckEntry(nil, ackKindWritten, 0, p.hi)); err != nil {
		return fmt.Errorf("wal: dead-letter ack log: %w", err)
	}
	d.purged = p.acked
	d.next = p.hi + 1
	changed := false
	for i, s := range scans {
		v, path := p.verdicts[i], filepath.Join(d.dir, s.sf.name)
		size := int64(len(s.data))
		switch {
		case !v.keep && (s.plan.zero || v.damage == nil), v.keep && d.purged.contains(s.sf.firstID):
			// Never written, zeroed (the plan counted the loss), or purged
			// before a crash kept the purge from deleting it.
			if err := os.Remove(path); err != nil {
				return fmt.Errorf("wal: %w", err)
			}
			changed = true
			continue
		case damaged[i]:
			l.log.Error("wal: dead letter damaged; it stays listed, with its damage, until purged", "id", s.sf.firstID, "damage", v.damage)
		case !v.keep:
			if err := quarantine(d.dir, s.sf.name, l.log); err != nil {
				return fmt.Errorf("wal: %w", err)
			}
			l.stats.quarantined.Add(1)
			changed = true
			continue
		case v.damage != nil:
			// The record is intact; what follows it is not.
			repaired, _, err := repairSegment(d.dir, s.sf.name, s.data, s.plan.scan, codecNone, l.log) // keeps its header's key id
			if err != nil {
				return fmt.Errorf("wal: repair dead letter %s: %w", s.sf.name, err)
			}
			l.stats.quarantined.Add(1)
			size = repaired
			changed = true
		}
		d.live[s.sf.firstID] = size
		d.count.Add(1)
		d.bytes.Add(size)
	}
	if changed {
		if err := syncDir(d.dir); err != nil {
			return fmt.Errorf("wal: %w", err)
		}
	}
	if c := d.corrupt.Load(); c > 0 {
		l.log.Warn("wal: dead letters recovered with losses", "lost", c)
	}
	return nil
}

// clearDeadStrays removes what an interrupted dead-letter write or ack log
// rewrite leaves (*.tmp: never renamed into place, so nobody was told it
// exists) and moves aside anything that is not a regular file where the
// dead-letter log keeps its files.
func (l *Log) clearDeadStrays() error {
	dir := l.dead.dir
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	changed := false
	for _, e := range ents {
		name := e.Name()
		base, tmp := strings.CutSuffix(name, tmpSuffix)
		_, isSeg := parseSegmentName(base)
		if !isSeg && base != ackFileName {
			continue
		}
		switch {
		case !e.Type().IsRegular():
			if err := quarantine(dir, name, l.log); err != nil {
				return err
			}
			l.stats.quarantined.Add(1)
		case tmp:
			if err := os.Remove(filepath.Join(dir, name)); err != nil {
				return err
			}
		default:
			continue
		}
		changed = true
	}
	if changed {
		return syncDir(dir)
	}
	return nil
}

// ListDeadLetters lists the dead letters of the WAL directory dir in id
// order, without opening it: it takes no lock and changes nothing, so it
// may look at a directory in use (a dead letter being written or purged
// meanwhile may be missed or still shown). Purged dead letters a crash
// left on disk are not listed; damaged files are, with their Damage.
// keys are the keys (KeySize bytes each, any order) to open encrypted
// dead letters with: one none of them opens is ErrKey.
func ListDeadLetters(dir string, keys ...[]byte) ([]DeadLetter, error) {
	ring, err := newKeyring(nil, keys)
	if err != nil {
		return nil, err
	}
	ddir := filepath.Join(dir, deadDirName)
	if fi, err := os.Stat(dir); err != nil {
		return nil, err
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("%s is not a directory", dir)
	}
	if fi, err := os.Lstat(ddir); errors.Is(err, fs.ErrNotExist) || (err == nil && !fi.IsDir()) {
		return nil, nil
	}
	av, scans, err := scanDeadDir(ddir, offlineReadLimit+deadMetaMax, false, nil)
	if err != nil {
		return nil, err
	}
	var out []DeadLetter
	for _, s := range scans {
		if av.state.acked.contains(s.sf.firstID) {
			continue
		}
		dl, _, err := readDeadFile(ddir, s.sf.firstID, offlineReadLimit+deadMetaMax, ring)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil && dl.Damage == nil {
			return out, err
		}
		out = append(out, dl)
	}
	return out, nil
}

// offlineReadLimit bounds a record's payload for the tools, which have no
// Options: the largest Options.readLimit gives by default.
const offlineReadLimit = 64<<20 + sealOverhead

// ReadDeadLetter reads dead letter id of the WAL directory dir without
// opening it (no lock, no change) and returns it with its payload (items
// framed with AppendFrame). ErrNotFound if there is none (or it was
// purged), ErrCorrupt if its file does not verify, ErrKey if it is
// encrypted under a key that is not among keys.
func ReadDeadLetter(dir string, id uint64, keys ...[]byte) (DeadLetter, []byte, error) {
	ring, err := newKeyring(nil, keys)
	if err != nil {
		return DeadLetter{}, nil, err
	}
	ddir := filepath.Join(dir, deadDirName)
	if _, err := os.Stat(dir); err != nil {
		return DeadLetter{}, nil, err
	}
	if fi, err := os.Lstat(ddir); errors.Is(err, fs.ErrNotExist) || (err == nil && !fi.IsDir()) {
		return DeadLetter{}, nil, notFound([]uint64{id})
	}
	av, err := readAckView(ddir, true, false, nil)
	if err != nil {
		return DeadLetter{}, nil, err
	}
	if av.state.acked.contains(id) {
		return DeadLetter{}, nil, notFound([]uint64{id})
	}
	dl, p, err := readDeadFile(ddir, id, offlineReadLimit+deadMetaMax, ring)
	if errors.Is(err, fs.ErrNotExist) {
		return DeadLetter{}, nil, notFound([]uint64{id})
	}
	return dl, p, err
}

// PurgeDeadLetters purges dead letters from the WAL directory dir, which
// must not be in use (ErrLocked otherwise): it opens the log — running
// the recovery a queue would run at start-up — purges as
// Log.PurgeDeadLetters does (all of them if no id is given) and closes it.
func PurgeDeadLetters(dir string, opts Options, ids ...uint64) (int, error) {
	var n int
	err := withOfflineLog(dir, opts, func(l *Log) error {
		var err error
		n, err = l.PurgeDeadLetters(ids...)
		return err
	})
	return n, err
}

// RequeueDeadLetters moves dead letters of the WAL directory dir (all of
// them if no id is given) back into its main log, which must not be in use
// (ErrLocked otherwise): each dead letter's items are appended durably as
// new records — the next Open's Replay hands them out — and only then is
// the dead letter purged, so a crash in between duplicates rather than
// loses. It returns how many dead letters it moved.
//
// It refuses, with ErrKeyedDeadLetter naming them and moving nothing,
// dead letters of keyed items (written by a queue that parks keys) whose
// move would break their key's order: any while the main log holds items
// not yet delivered (the key's later items among them would replay
// first), and one moved without an earlier dead letter of the same key
// (a parked letter without its key's failed one). A queue's own
// RequeueDeadLetters keeps each key's order in every case.
func RequeueDeadLetters(dir string, opts Options, ids ...uint64) (int, error) {
	var n int
	err := withOfflineLog(dir, opts, func(l *Log) error {
		if err := l.refuseKeyedLetters(ids); err != nil {
			return err
		}
		var err error
		n, err = l.RequeueDeadLetters(ids, func(_ DeadLetter, payload []byte) error {
			return l.appendFramed(payload)
		})
		return err
	})
	return n, err
}

// withOfflineLog opens dir (which must exist) without preparing segments,
// runs fn and closes it.
func withOfflineLog(dir string, opts Options, fn func(*Log) error) error {
	if _, err := os.Stat(dir); err != nil {
		return err
	}
	opts.noSpare = true
	l, err := Open(dir, opts)
	if err != nil {
		return err
	}
	err = fn(l)
	if cerr := l.Close(); cerr != nil && !errors.Is(cerr, ErrClosed) {
		err = errors.Join(err, cerr)
	}
	return err
}

// appendFramed writes framed items as records of at most MaxRecord bytes
// each (a dead letter from a log with a larger limit is split between
// items) and makes them durable.
func (l *Log) appendFramed(payload []byte) error {
	var rec []byte
	flush := func() error {
		if len(rec) == 0 {
			return nil
		}
		_, err := l.Write(rec)
		rec = rec[:0]
		return err
	}
	if len(payload) <= l.opts.MaxRecord {
		rec = payload
	} else {
		err := ForEachItem(payload, func(item []byte) error {
			if len(rec)+FrameSize(len(item)) > l.opts.MaxRecord {
				if err := flush(); err != nil {
					return err
				}
			}
			rec = AppendFrame(rec, item)
			return nil
		})
		if err != nil {
			return err
		}
	}
	if err := flush(); err != nil {
		return err
	}
	return l.Sync()
}

// refuseKeyedLetters returns ErrKeyedDeadLetter naming the dead letters
// among ids (all of them if ids is empty) that an offline requeue would put
// out of their key's order, or nil if there are none. A keyed letter may
// move only if the main log holds no item not yet delivered (the key's
// later items may be among them, and would replay first, by id), and only
// with every earlier keyed letter that shares a key with it (moved in id
// order, they keep the keys' order; a parked letter moved without its key's
// failed one would be delivered while that one is still dead-lettered). A
// damaged letter is left to the requeue itself, which reports it.
func (l *Log) refuseKeyedLetters(ids []uint64) error {
	all, err := l.DeadLetters() // in id order
	if err != nil {
		return err
	}
	st := l.Stats()
	backlog := st.ItemsPending > 0 || st.Uncounted > 0
	asked := make(map[uint64]bool, len(ids))
	for _, id := range ids {
		asked[id] = true
	}
	moved := func(id uint64) bool { return len(ids) == 0 || asked[id] }
	held := make(map[uint64]bool) // keys of earlier keyed letters that stay
	heldAll := false              // an earlier damaged letter: its keys are unknown
	var behindLog, behindLetter []uint64
	for _, d := range all {
		if d.Damage != nil {
			heldAll = true // it cannot be moved, and may hold any key
			continue
		}
		if len(d.Keys) == 0 && !d.Parked {
			continue
		}
		if !moved(d.ID) {
			for _, k := range d.Keys {
				held[k] = true
			}
			continue
		}
		switch {
		case backlog:
			behindLog = append(behindLog, d.ID)
		case heldAll || slices.ContainsFunc(d.Keys, func(k uint64) bool { return held[k] }):
			behindLetter = append(behindLetter, d.ID)
		}
	}
	var why []string
	if len(behindLog) > 0 {
		why = append(why, fmt.Sprintf("dead letters %v hold keyed items, and the main log still holds items not delivered (%d counted), which may include later items of their keys", behindLog, st.ItemsPending))
	}
	if len(behindLetter) > 0 {
		why = append(why, fmt.Sprintf("dead letters %v hold keyed items behind an earlier dead letter of their keys that stays, or a damaged one (requeue them together, or that one alone: the next start releases the ones parked behind it; purge a damaged one once you have dealt with it)", behindLetter))
	}
	if len(why) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s; nothing was moved: start the queue and call its RequeueDeadLetters, which keeps each key's order", ErrKeyedDeadLetter, strings.Join(why, "; "))
}
