package wal

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// recover brings the directory to a consistent state and loads it: it
// finishes or discards interrupted repairs, moves aside what cannot be
// part of a log, reads the ack log, verifies every segment, counts what is
// lost (planRecovery), writes the resulting acknowledgement state back,
// and only then repairs damaged segments and deletes the ones wholly
// acknowledged.
func (l *Log) recover() error {
	if err := finishRepairs(l.dir); err != nil {
		return fmt.Errorf("wal: %w", err)
	}
	if err := l.clearStrays(); err != nil {
		return fmt.Errorf("wal: %w", err)
	}
	files, err := listSegments(l.dir)
	if err != nil {
		return fmt.Errorf("wal: %w", err)
	}
	av, err := readAckView(l.dir, len(files) > 0, true, l.log)
	if err != nil {
		return fmt.Errorf("wal: %w", err)
	}
	if av.problem != "" {
		l.stats.quarantined.Add(1)
		l.log.Error("wal: acknowledgement state damaged; records on disk may be replayed again, and ids missing from disk cannot be told lost or acknowledged", "problem", av.problem)
	}
	if av.state.legacy {
		l.log.Info("wal: converting the ack file to the acknowledgement log format")
	}
	scanned := l.scanSegments(files)
	defer func() {
		for _, ss := range scanned {
			if ss.unmap != nil {
				ss.unmap()
			}
		}
	}()
	psegs := make([]planSegment, len(scanned))
	for i, ss := range scanned {
		if ss.err != nil {
			return ss.err
		}
		psegs[i] = planSegment{name: ss.sf.name, nameID: ss.sf.firstID, zero: ss.zero, scan: ss.scan, gaps: ss.gaps}
	}
	p := planRecovery(av, psegs)
	l.stats.corrupt.Add(p.lost)
	for _, loss := range p.losses {
		l.log.Error("wal: records lost", "from", loss.From, "to", loss.To, "records", loss.Records(), "segment", loss.Segment, "reason", loss.Reason)
	}
	for _, u := range p.unknown {
		l.log.Warn("wal: record ids missing from disk; with the acknowledgement state damaged they may have been delivered or lost", "from", u.lo, "to", u.hi)
	}

	// Whatever is kept past the old written mark is made durable now, so
	// the new mark can cover it: a later cut of it will then count.
	for i, ss := range scanned {
		if v := p.verdicts[i]; v.keep && v.keepLast > av.state.written {
			if err := syncPath(filepath.Join(l.dir, ss.sf.name)); err != nil {
				return fmt.Errorf("wal: %w", err)
			}
		}
	}
	// The acknowledgement state first: losses become acknowledged (counted
	// once), and nothing below is deleted or rewritten before the state
	// that explains it is durable. One more flush follows before anything
	// relies on it (see flushAcks).
	if err := l.opts.inject("ack"); err != nil {
		return fmt.Errorf("wal: %w", err)
	}
	// Item entries of records acknowledged whole, or lost, are dropped.
	for id, set := range av.state.items.m {
		if !p.acked.contains(id) {
			for _, sp := range set.spans {
				l.partial.add(id, int(sp.lo), int(sp.hi-sp.lo+1))
			}
		}
	}
	al, err := rewriteAckLog(l.dir, av.state.gen+1, p.acked.spans, l.partial.entries(), p.hi)
	if err != nil {
		return fmt.Errorf("wal: %w", err)
	}
	l.ackLog = al
	if err := al.append(appendAckEntry(nil, ackKindWritten, 0, p.hi)); err != nil {
		return fmt.Errorf("wal: %w", err)
	}
	l.acked = p.acked
	l.synced.Store(p.hi)
	l.flushedW = p.hi

	var changedDir bool
	for i := range scanned {
		ss, v := &scanned[i], p.verdicts[i]
		path := filepath.Join(l.dir, ss.sf.name)
		if !v.keep {
			changedDir = true
			if ss.zero || v.damage == nil {
				// Created but never written (a crash during a roll), or
				// zeroed: nothing to keep; the plan counted any loss.
				if err := os.Remove(path); err != nil {
					return fmt.Errorf("wal: %w", err)
				}
				continue
			}
			if err := quarantine(l.dir, ss.sf.name, l.log); err != nil {
				return fmt.Errorf("wal: %w", err)
			}
			l.stats.quarantined.Add(1)
			continue
		}
		scan := ss.scan
		seg := &segment{name: ss.sf.name, firstID: scan.firstID, lastID: v.keepLast, size: int64(len(ss.data)), end: scan.end, sealed: true}
		if scan.headerOK { // kept records imply an intact header
			seg.frame = scan.header.framing()
			if seg.aead, err = l.opts.keys.forHeader(scan.header); err != nil {
				return fmt.Errorf("%w: %w: %s", ErrInvalidOptions, err, ss.sf.name) // checkKeys ran: only if the file changed under the lock
			}
		}
		for _, e := range ss.index {
			// A repair moves the records after the first hole.
			if e.id <= v.keepLast && (len(scan.holes) == 0 || e.off < scan.holes[0].cut) {
				seg.index = append(seg.index, e)
			}
		}
		if v.damage != nil {
			size, frame, err := repairSegment(l.dir, ss.sf.name, ss.data, scan, l.opts.Compression.codec(), l.log)
			if err != nil {
				return fmt.Errorf("wal: repair %s: %w", ss.sf.name, err)
			}
			seg.frame = frame
			l.stats.quarantined.Add(1)
			changedDir = true
			seg.size, seg.end = size, size
		}
		l.loadRecordStates(seg, ss.recs)
		l.segs = append(l.segs, seg)
		l.bytes += seg.size
		if seg.live > 0 {
			l.asegs = append(l.asegs, seg)
			l.liveBytes += segmentHeaderSize
		} else {
			l.doomed = append(l.doomed, seg) // deleted below
		}
	}
	if changedDir {
		if err := syncDir(l.dir); err != nil {
			return fmt.Errorf("wal: %w", err)
		}
	}
	doomed := l.doomed
	l.doomed = nil
	if err := l.deleteSegments(doomed); err != nil {
		return fmt.Errorf("wal: %w", err)
	}
	l.nextID = p.hi + 1
	l.recoveredLast = p.hi
	l.issued.Store(p.hi)
	l.persisted.Store(l.acked.mark())
	if c := l.stats.corrupt.Load(); c > 0 {
		l.log.Warn("wal: recovered with losses", "corrupt_records", c, "quarantined", l.stats.quarantined.Load())
	}
	return nil
}

// loadRecordStates fills seg's record states from the scan: acknowledged
// ids are done; the others wait for Replay with the items the ack log's
// item entries name taken off their count (when the header states it;
// otherwise the count is unknown until Replay counts the frames). A record
// whose item entries cover all its items is acknowledged now.
func (l *Log) loadRecordStates(seg *segment, scanned []recState) {
	n := seg.lastID - seg.firstID + 1
	seg.recs = make([]recState, n)
	for i := range seg.recs {
		id := seg.firstID + uint64(i)
		r := scanned[i]
		if l.acked.contains(id) || r.left == 0 {
			l.partial.drop(id)
			continue
		}
		if r.left == itemsUnknown {
			l.uncounted++
		} else {
			r.left -= uint32(l.partial.clip(id, int(r.left)))
			if r.left == 0 {
				l.acked.add(id, id)
				l.fresh.add(id, id) // written by the first flush
				continue
			}
			l.pending += uint64(r.left)
		}
		seg.recs[i] = r
		seg.live++
		l.liveBytes += recordSize(int(r.stored))
	}
}

// clearStrays removes what a crash leaves that is not part of the log (a
// spare segment, a temporary ack log) and moves aside anything that is not
// a regular file where the log keeps its files (a directory named like a
// segment, say), so that it cannot stand in the way.
func (l *Log) clearStrays() error {
	ents, err := os.ReadDir(l.dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		name := e.Name()
		_, isSeg := parseSegmentName(name)
		ours := isSeg || name == ackFileName || name == spareFileName || name == ackFileName+tmpSuffix
		if !ours {
			continue
		}
		if !e.Type().IsRegular() {
			if err := quarantine(l.dir, name, l.log); err != nil {
				return err
			}
			l.stats.quarantined.Add(1)
			continue
		}
		if name == spareFileName || name == ackFileName+tmpSuffix {
			if err := os.Remove(filepath.Join(l.dir, name)); err != nil {
				return err
			}
		}
	}
	return nil
}

// syncPath fdatasyncs the file at path.
func syncPath(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return fdatasync(f)
}

// scannedSegment is one segment file mapped and verified, before recovery
// decides anything about it.
type scannedSegment struct {
	sf    segmentFile
	data  []byte
	unmap func()
	zero  bool // all zeros: created, never written
	scan  segmentScan
	gaps  []span // ids its gap records cover
	index []indexEntry
	recs  []recState // each id of the intact prefix: time, item count (itemsUnknown if not stated), stored length; zero for gap ids
	err   error
}

// scanSegments maps and verifies the segment files on GOMAXPROCS
// goroutines: checksums are most of what Open costs, and segments are
// independent until recovery compares their ids, which it does afterwards.
// The caller unmaps them.
func (l *Log) scanSegments(files []segmentFile) []scannedSegment {
	out := make([]scannedSegment, len(files))
	next := make(chan int, len(files))
	for i := range files {
		next <- i
	}
	close(next)
	var wg sync.WaitGroup
	for w := 0; w < min(runtime.GOMAXPROCS(0), len(files)); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				out[i] = scanFile(l.dir, files[i], l.opts.readLimit())
			}
		}()
	}
	wg.Wait()
	return out
}

// scanFile maps and verifies one segment file; the caller unmaps it.
func scanFile(dir string, sf segmentFile, readLimit int) scannedSegment {
	ss := scannedSegment{sf: sf}
	path := filepath.Join(dir, sf.name)
	data, unmap, err := mapFile(path)
	if err != nil {
		ss.err = fmt.Errorf("wal: %w", err)
		return ss
	}
	ss.data, ss.unmap = data, unmap
	var zeroHeader bool
	ss.err = withFaultsAsErrors(func() error {
		zeroHeader = allZero(data[:min(len(data), segmentHeaderSize)])
		return nil
	})
	if ss.err != nil {
		return ss
	}
	if zeroHeader {
		ss.err = withFaultsAsErrors(func() error {
			ss.zero = allZero(data)
			return nil
		})
		if ss.zero || ss.err != nil {
			return ss
		}
	}
	probe, err := os.Open(path)
	if err != nil {
		probe = nil
	} else {
		defer probe.Close()
	}
	ss.err = withFaultsAsErrors(func() error {
		prev := sf.firstID - 1
		var err error
		n := 0
		ss.scan, err = scanSegmentSkipping(data, sf.firstID, readLimit, func(off int64, h recordHeader, stored []byte) error {
			if h.kind == kindGap {
				ss.gaps = append(ss.gaps, span{prev + 1, h.id})
				for id := prev + 1; id <= h.id; id++ {
					ss.recs = append(ss.recs, recState{})
				}
			} else {
				for id := prev + 1; id < h.id; id++ {
					ss.recs = append(ss.recs, recState{}) // lost in a hole: acknowledged by recovery
				}
				left := itemsUnknown
				if h.items > 0 {
					left = uint32(h.items)
				}
				ss.recs = append(ss.recs, recState{time: h.time, left: left, stored: uint32(len(stored))})
			}
			if n%indexEvery == 0 {
				ss.index = append(ss.index, indexEntry{h.id, off})
			}
			n++
			prev = h.id
			return nil
		}, nextDataFunc(probe, int64(len(data))))
		return err
	})
	if ss.err != nil {
		ss.err = fmt.Errorf("wal: scan %s: %w", sf.name, ss.err)
	}
	return ss
}

// nextDataFunc returns a probe of f for the first extent at or after off
// that may hold data, [start, end): lseek SEEK_DATA, then SEEK_HOLE from
// there (nil f: no probe). Where the file system cannot tell, everything
// is data: [off, size).
func nextDataFunc(f *os.File, size int64) func(int64) (int64, int64) {
	if f == nil {
		return nil
	}
	return func(off int64) (int64, int64) {
		start, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			return size, size // nothing but holes up to the end
		}
		if err != nil || start < off || start >= size {
			return off, size
		}
		end, err := unix.Seek(int(f.Fd()), start, unix.SEEK_HOLE)
		if err != nil || end <= start || end > size {
			return start, size
		}
		return start, end
	}
}

// writeFileSync writes a new 0600 file and fsyncs it.
func writeFileSync(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := fdatasync(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// installFile puts data at path crash-safely: written and fdatasync'd as
// <path>.tmp, renamed over path, and the directory synced. Until the
// rename whatever was at path stands; after it, the new file. placed says
// whether the rename happened (an error after it is the directory sync's).
func installFile(path string, data []byte) (placed bool, err error) {
	tmp := path + tmpSuffix
	if err := writeFileSync(tmp, data); err != nil {
		os.Remove(tmp)
		return false, fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return false, err
	}
	return true, syncDir(filepath.Dir(path))
}

// finishRepairs deals with a repair a crash interrupted: a complete,
// synced <segment>.tmp whose segment is gone was between its two renames
// and is renamed into place; one whose segment is still there is dropped
// (the repair will run again).
func finishRepairs(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	changed := false
	for _, e := range ents {
		seg, ok := strings.CutSuffix(e.Name(), tmpSuffix)
		if !ok {
			continue
		}
		if _, ok := parseSegmentName(seg); !ok {
			continue
		}
		tmp, path := filepath.Join(dir, e.Name()), filepath.Join(dir, seg)
		if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
			err = os.Rename(tmp, path)
			if err != nil {
				return err
			}
		} else if err := os.Remove(tmp); err != nil {
			return err
		}
		changed = true
	}
	if changed {
		return syncDir(dir)
	}
	return nil
}

// repairedRecords returns the records a repair keeps: the intact ones, in
// order, with a gap record in place of each hole that lost ids (its id
// the hole's last), so that ids stay contiguous and the next Open finds
// no damage; the lost ids are acknowledged in the ack log before the
// repair, and the gap records say so too (see kindGap). Every record is
// framed under to, the repaired file's framing (format.go): a segment of
// an older version is repaired into the current one, and a salted one
// gets a new salt.
func repairedRecords(data []byte, scan segmentScan, to recordFraming) ([]byte, error) {
	if scan.records == 0 {
		return nil, nil
	}
	was := scan.header.framing()
	var out []byte
	prev := scan.firstID - 1
	keep := func(lo, hi int64) error {
		for pos := lo; pos < hi; {
			// The scan verified these records (and restored an id lost
			// in a complete record: want).
			h, _, size, err := decodeRecordCRC(data[pos:hi], len(data), prev+1, false, was)
			if err != nil {
				return fmt.Errorf("offset %d: %v", pos, err)
			}
			at := len(out)
			out = append(out, data[pos:pos+size]...)
			reframe(out[at:], h.id, h.length, to)
			prev = h.id
			pos += size
		}
		return nil
	}
	from := int64(segmentHeaderSize)
	for _, h := range scan.holes {
		if err := keep(from, h.cut); err != nil {
			return nil, err
		}
		if h.lo <= h.hi {
			gap := make([]byte, recordSize(0))
			encodeRecord(gap, recordHeader{id: h.hi, time: time.Now().UnixNano(), kind: kindGap}, nil, to)
			out = append(out, gap...)
			prev = h.hi
		}
		from = h.resume
	}
	if err := keep(from, scan.end); err != nil {
		return nil, err
	}
	// The end may have lost the last record's padding.
	return append(out, make([]byte, align8(int64(len(out)))-int64(len(out)))...), nil
}

// repairSegment moves a damaged segment aside as <name>.corrupt and puts in
// its place a file holding its intact records (repairedRecords), so that
// the next Open finds no damage (the ids lost are acknowledged in the ack
// log, written before this runs, so nothing is counted twice). The new
// file is written and synced under a temporary name first and renamed
// over; finishRepairs completes the job if a crash interrupts it between
// the two renames. It returns the new file's size and its records'
// framing.
func repairSegment(dir, name string, data []byte, scan segmentScan, codec uint8, logger *slog.Logger) (int64, recordFraming, error) {
	path := filepath.Join(dir, name)
	corrupt := quarantineName(dir, name)
	h := segmentHeader{codec: codec}
	if scan.headerOK {
		h = scan.header // the codec, and the key id its records are sealed under
	}
	if !h.sealed {
		h.salt = newSalt()
	}
	records, err := repairedRecords(data, scan, h.framing())
	if err != nil {
		return 0, recordFraming{}, err
	}
	size := int64(segmentHeaderSize + len(records))
	buf := make([]byte, size)
	h.flags |= segmentRepaired
	h.firstID, h.size = scan.firstID, uint64(size)
	putSegmentHeader(buf, h)
	copy(buf[segmentHeaderSize:], records)
	tmp := path + tmpSuffix
	if err := writeFileSync(tmp, buf); err != nil {
		return 0, recordFraming{}, err
	}
	if err := os.Rename(path, corrupt); err != nil {
		return 0, recordFraming{}, err
	}
	if err := os.Rename(tmp, path); err != nil {
		return 0, recordFraming{}, err
	}
	logger.Warn("wal: segment moved aside and its intact records kept", "segment", name, "corrupt_copy", filepath.Base(corrupt), "holes", len(scan.holes))
	return size, h.framing(), nil
}
