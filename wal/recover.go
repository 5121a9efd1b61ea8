package wal

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// recover brings the directory to a consistent state and loads it: it
// finishes or discards interrupted repairs, reads the ack mark, verifies
// every segment, repairs the damaged ones and deletes the ones wholly
// acknowledged.
func (l *Log) recover() error {
	if err := finishRepairs(l.dir); err != nil {
		return fmt.Errorf("wal: %w", err)
	}
	// A spare segment left by a crash is not part of the log.
	if err := os.Remove(filepath.Join(l.dir, spareFileName)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("wal: %w", err)
	}
	af, mark, valid, created, err := openAckFile(l.dir)
	if err != nil {
		return fmt.Errorf("wal: %w", err)
	}
	l.ackFile = af
	if created {
		// A valid mark from the start lets the next Open tell ids that were
		// acknowledged and deleted from ids that went missing.
		if err := af.write(0); err != nil {
			return fmt.Errorf("wal: %w", err)
		}
		if err := syncDir(l.dir); err != nil {
			return fmt.Errorf("wal: %w", err)
		}
		valid = true
	} else if !valid {
		l.log.Warn("wal: ack mark unreadable; replaying every record on disk (duplicates possible)")
	}
	l.acks.mark = mark
	l.persisted.Store(mark)

	files, err := listSegments(l.dir)
	if err != nil {
		return fmt.Errorf("wal: %w", err)
	}
	scanned := l.scanSegments(files)
	defer func() {
		for _, ss := range scanned {
			if ss.unmap != nil {
				ss.unmap()
			}
		}
	}()
	// The id the next segment should start at; 0 = unknown (no valid mark).
	// Segments at or below the mark are deleted in order, so the first
	// segment starts at or below mark+1 unless files went missing.
	expect := uint64(0)
	if valid {
		expect = mark + 1
	}
	var changedDir bool
	for i := range files {
		prevNext := uint64(0) // next id after the previous segment kept
		if len(l.segs) > 0 {
			prevNext = expect
		}
		rs, err := l.recoverSegment(&scanned[i], files[i+1:], prevNext)
		if err != nil {
			return err
		}
		if rs.removed {
			changedDir = true
			continue
		}
		if expect != 0 && rs.seg.firstID > expect {
			// Ids missing before this segment with no damage to show for
			// it: a segment file was emptied or removed. Count them once,
			// and bridge them with a gap segment so the next Open does not.
			lost := countAbove(expect, rs.seg.firstID-1, l.acks.mark)
			l.stats.corrupt.Add(lost)
			l.log.Error("wal: record ids missing", "from", expect, "to", rs.seg.firstID-1, "lost_records", lost)
			gap, err := l.writeGapSegment(expect, rs.seg.firstID-1)
			if err != nil {
				return fmt.Errorf("wal: %w", err)
			}
			l.segs = append(l.segs, gap)
			l.bytes += gap.size
			l.acks.ack(expect, rs.seg.firstID-1)
			changedDir = true
		}
		for _, g := range rs.gaps {
			l.acks.ack(g.lo, g.hi)
		}
		changedDir = changedDir || rs.repaired
		expect = rs.seg.lastID + 1
		l.segs = append(l.segs, rs.seg)
		l.bytes += rs.seg.size
	}
	if changedDir {
		if err := syncDir(l.dir); err != nil {
			return fmt.Errorf("wal: %w", err)
		}
	}
	last := mark
	if n := len(l.segs); n > 0 {
		last = max(last, l.segs[n-1].lastID)
	}
	l.nextID = last + 1
	l.recoveredLast = last
	l.issued.Store(last)
	// Ids the mark covers but no segment holds, and ids between the mark
	// and the first segment, need no delivery.
	if n := len(l.segs); n > 0 && l.segs[0].firstID > l.acks.mark+1 {
		l.acks.ack(l.acks.mark+1, l.segs[0].firstID-1)
	}
	if l.acks.mark > l.persisted.Load() {
		if err := l.ackFile.write(l.acks.mark); err != nil {
			return fmt.Errorf("wal: %w", err)
		}
		l.persisted.Store(l.acks.mark)
	}
	if err := l.deleteCovered(l.persisted.Load()); err != nil {
		return fmt.Errorf("wal: %w", err)
	}
	if c := l.stats.corrupt.Load(); c > 0 {
		l.log.Warn("wal: recovered with losses", "corrupt_records", c, "quarantined_segments", l.stats.quarantined.Load())
	}
	return nil
}

// countAbove counts the ids in [lo, hi] that are above mark.
func countAbove(lo, hi, mark uint64) uint64 {
	lo = max(lo, mark+1)
	if hi < lo {
		return 0
	}
	return hi - lo + 1
}

type recoveredSegment struct {
	seg      *segment
	gaps     []span // ids the segment's gap records cover
	removed  bool   // nothing worth keeping: the file is gone
	repaired bool
}

// recoverSegment verifies one segment file and repairs it if damaged.
// later are the segment files after it: the next one's first id tells how
// many ids the damage took. prevNext is the id after the previous segment
// kept (0 for the first): a segment starting below it overlaps.
func (l *Log) recoverSegment(ss *scannedSegment, later []segmentFile, prevNext uint64) (recoveredSegment, error) {
	var rs recoveredSegment
	sf, data := ss.sf, ss.data
	path := filepath.Join(l.dir, sf.name)
	if ss.err != nil {
		return rs, ss.err
	}
	if ss.zero {
		// Created but never written (a crash during a roll, or a repair's
		// empty result): nothing to keep, nothing lost.
		if err := os.Remove(path); err != nil {
			return rs, fmt.Errorf("wal: %w", err)
		}
		rs.removed = true
		return rs, nil
	}
	scan, gaps := ss.scan, ss.gaps
	if scan.damage == nil && prevNext != 0 && scan.firstID < prevNext {
		scan.damage = &Damage{Offset: 8, Reason: fmt.Sprintf("first id %d overlaps the previous segment (next id %d)", scan.firstID, prevNext)}
		scan.lastID, scan.records, scan.dataRecs, scan.end = scan.firstID-1, 0, 0, 0
		gaps = nil
	}
	rs.gaps = gaps
	index := ss.index
	for len(index) > 0 && index[len(index)-1].id > scan.lastID {
		index = index[:len(index)-1] // past the damage: not kept
	}
	seg := &segment{name: sf.name, firstID: scan.firstID, lastID: scan.lastID, size: int64(len(data)), end: scan.end, index: index}
	rs.seg = seg
	if scan.damage == nil {
		if scan.records == 0 {
			// A segment with a header and no records: a crash right after a
			// roll. Its first id was never used.
			if err := os.Remove(path); err != nil {
				return rs, fmt.Errorf("wal: %w", err)
			}
			rs.removed = true
		}
		return rs, nil
	}

	// Damage: how many ids did it take? The next segment's first id says
	// exactly; for the last segment, the valid records found after the
	// damage say at least how many, and a damaged record counts as one.
	lastLost := scan.lastID
	switch {
	case len(later) > 0 && later[0].firstID > scan.lastID:
		lastLost = later[0].firstID - 1
	case scan.afterMax > scan.lastID:
		lastLost = scan.afterMax
	case scan.damage.Offset < int64(len(data)) && !isZeroFile(data[scan.end:]):
		lastLost = scan.lastID + 1
	}
	lost := countAbove(scan.lastID+1, lastLost, l.acks.mark)
	l.stats.corrupt.Add(lost)
	l.log.Error("wal: damaged segment",
		"segment", sf.name, "offset", scan.damage.Offset, "reason", scan.damage.Reason,
		"intact_records", scan.dataRecs, "last_intact_id", scan.lastID, "lost_records", lost)

	if err := l.repairSegment(sf.name, data, scan, lastLost); err != nil {
		return rs, fmt.Errorf("wal: repair %s: %w", sf.name, err)
	}
	rs.repaired = true
	l.stats.quarantined.Add(1)
	if lastLost > scan.lastID {
		rs.gaps = append(rs.gaps, span{scan.lastID + 1, lastLost})
	}
	if scan.records == 0 && lastLost == scan.lastID {
		rs.removed = true // nothing kept, nothing to bridge
		return rs, nil
	}
	seg.lastID = lastLost
	seg.size, seg.end = repairedSize(scan, lastLost), repairedSize(scan, lastLost)
	return rs, nil
}

func isZeroFile(b []byte) bool { return allZero(b) }

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
				out[i] = l.scanFile(files[i])
			}
		}()
	}
	wg.Wait()
	return out
}

func (l *Log) scanFile(sf segmentFile) scannedSegment {
	ss := scannedSegment{sf: sf}
	path := filepath.Join(l.dir, sf.name)
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
			ss.zero = isZeroFile(data)
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
		ss.scan, err = scanSegmentSkipping(data, sf.firstID, l.opts.readLimit(), func(off int64, h recordHeader, _ []byte) error {
			if h.kind == kindGap {
				ss.gaps = append(ss.gaps, span{prev + 1, h.id})
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

// nextDataFunc returns a SEEK_DATA probe of f (nil f: no probe).
func nextDataFunc(f *os.File, size int64) func(int64) int64 {
	if f == nil {
		return nil
	}
	return func(off int64) int64 {
		q, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			return size // nothing but holes up to the end
		}
		if err != nil || q < off {
			return off
		}
		return q
	}
}

// writeGapSegment creates a segment holding only a gap record for ids
// first..last, which no file holds any more.
func (l *Log) writeGapSegment(first, last uint64) (*segment, error) {
	size := int64(segmentHeaderSize) + recordSize(0)
	buf := make([]byte, size)
	putSegmentHeader(buf, segmentHeader{codec: l.opts.Compression.codec(), flags: segmentRepaired, firstID: first, size: uint64(size)})
	encodeRecord(buf[segmentHeaderSize:], recordHeader{id: last, time: time.Now().UnixNano(), kind: kindGap}, nil)
	name := segmentName(first)
	if err := writeFileSync(filepath.Join(l.dir, name), buf); err != nil {
		return nil, err
	}
	return &segment{name: name, firstID: first, lastID: last, size: size, end: size}, nil
}

// repairedSize is the length of the file repairSegment writes.
func repairedSize(scan segmentScan, lastLost uint64) int64 {
	n := int64(segmentHeaderSize)
	if scan.records > 0 {
		n = align8(scan.end) // the cut may have taken the last record's padding
	}
	if lastLost > scan.lastID {
		n += recordSize(0)
	}
	return n
}

// repairSegment moves a damaged segment aside as <name>.corrupt and puts in
// its place a file holding the intact prefix, followed by a gap record for
// the ids the damage took (lastLost), so that the next Open sees contiguous
// ids and counts nothing twice. The new file is written and synced under a
// temporary name first and renamed over; finishRepairs completes the job if
// a crash interrupts it between the two renames.
func (l *Log) repairSegment(name string, data []byte, scan segmentScan, lastLost uint64) error {
	path := filepath.Join(l.dir, name)
	corrupt := quarantineName(l.dir, name)
	if scan.records == 0 && lastLost == scan.lastID {
		if err := os.Rename(path, corrupt); err != nil {
			return err
		}
		l.log.Warn("wal: segment moved aside", "from", name, "to", filepath.Base(corrupt))
		return nil
	}
	size := repairedSize(scan, lastLost)
	buf := make([]byte, size)
	codec := l.opts.Compression.codec()
	if scan.headerOK {
		codec = scan.header.codec
	}
	putSegmentHeader(buf, segmentHeader{codec: codec, flags: segmentRepaired, firstID: scan.firstID, size: uint64(size)})
	if scan.records > 0 {
		copy(buf[segmentHeaderSize:], data[segmentHeaderSize:scan.end])
	}
	if lastLost > scan.lastID {
		off := size - recordSize(0)
		encodeRecord(buf[off:], recordHeader{id: lastLost, time: time.Now().UnixNano(), kind: kindGap}, nil)
	}
	tmp := path + tmpSuffix
	if err := writeFileSync(tmp, buf); err != nil {
		return err
	}
	if err := os.Rename(path, corrupt); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	l.log.Warn("wal: segment moved aside and its intact prefix kept", "segment", name, "corrupt_copy", filepath.Base(corrupt))
	return nil
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
