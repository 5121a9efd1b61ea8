package wal

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Read-only access for tools (cmd/vinewal): these functions take no lock
// and change nothing, so they can look at a directory a live Log is
// writing (its newest records may then be in flight).

// Report describes a WAL directory.
type Report struct {
	Dir         string
	AckMark     uint64 // every id <= AckMark was acknowledged
	AckValid    bool   // false: the ACK file is missing or unreadable
	Segments    []SegmentReport
	Quarantined []string // *.corrupt files moved aside by earlier recoveries
}

// Damaged reports whether any segment is damaged.
func (r Report) Damaged() bool {
	for _, s := range r.Segments {
		if s.Damage != nil {
			return true
		}
	}
	return false
}

// SegmentReport describes one segment file.
type SegmentReport struct {
	Name        string
	FirstID     uint64 // from the header (the file name's if the header is damaged)
	LastID      uint64 // last id of the intact records; FirstID-1 if none
	Records     int    // intact data records
	GapRecords  int    // records standing for ids lost in an earlier repair
	FileSize    int64
	Used        int64  // bytes up to the end of the intact records
	Compression string // the codec the header names
	Repaired    bool   // rewritten by a recovery
	Damage      *Damage
	// LostRecords counts what recovery would count in Stats.Corrupt for
	// this segment (ignoring the ack mark).
	LostRecords uint64
}

// Inspect scans every segment of dir, verifying every checksum.
func Inspect(dir string) (Report, error) {
	r := Report{Dir: dir}
	st, err := os.Stat(dir)
	if err != nil {
		return r, err
	}
	if !st.IsDir() {
		return r, fmt.Errorf("%s is not a directory", dir)
	}
	mark, valid, err := readAckMark(dir)
	if err != nil {
		return r, err
	}
	r.AckMark, r.AckValid = mark, valid
	files, err := listSegments(dir)
	if err != nil {
		return r, err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return r, err
	}
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), corruptSuffix) {
			r.Quarantined = append(r.Quarantined, e.Name())
		}
	}
	for i, sf := range files {
		data, unmap, err := mapFile(filepath.Join(dir, sf.name))
		if err != nil {
			return r, err
		}
		sr := SegmentReport{Name: sf.name, FileSize: int64(len(data))}
		var scan segmentScan
		err = withFaultsAsErrors(func() error {
			var err error
			scan, err = scanSegment(data, sf.firstID, 64<<20, func(_ int64, h recordHeader, _ []byte) error {
				if h.kind == kindGap {
					sr.GapRecords++
				}
				return nil
			})
			return err
		})
		unmap()
		if err != nil {
			return r, fmt.Errorf("%s: %w", sf.name, err)
		}
		sr.FirstID, sr.LastID, sr.Records, sr.Used, sr.Damage = scan.firstID, scan.lastID, scan.dataRecs, scan.end, scan.damage
		if scan.headerOK {
			sr.Compression = codecName(scan.header.codec)
			sr.Repaired = scan.header.flags&segmentRepaired != 0
		}
		if scan.damage != nil {
			switch {
			case i+1 < len(files) && files[i+1].firstID > scan.lastID:
				sr.LostRecords = files[i+1].firstID - 1 - scan.lastID
			case scan.afterMax > scan.lastID:
				sr.LostRecords = scan.afterMax - scan.lastID
			case scan.damage.Offset < int64(len(data)):
				sr.LostRecords = 1
			}
		}
		r.Segments = append(r.Segments, sr)
	}
	return r, nil
}

// Record is one record as ReadSegment returns it.
type Record struct {
	ID          uint64
	Time        time.Time
	Offset      int64  // in the segment file
	Compression string // codec of the stored payload
	StoredLen   int    // bytes on disk
	Gap         bool   // a gap record: ids up to ID were lost and counted
	Payload     []byte // decompressed; valid only during the callback
}

// ReadSegment calls fn for each intact record of the segment file at path,
// in order, and returns the scan's damage (nil if none) once done. A record
// that verifies but does not decompress stops it with ErrCorrupt.
func ReadSegment(path string, fn func(Record) error) (*Damage, error) {
	id, ok := parseSegmentName(filepath.Base(path))
	if !ok {
		id = 0
	}
	data, unmap, err := mapFile(path)
	if err != nil {
		return nil, err
	}
	defer unmap()
	var buf []byte
	var scan segmentScan
	err = withFaultsAsErrors(func() error {
		var err error
		scan, err = scanSegment(data, id, 64<<20, func(off int64, h recordHeader, stored []byte) error {
			rec := Record{ID: h.id, Time: time.Unix(0, h.time), Offset: off, Compression: codecName(h.codec), StoredLen: len(stored), Gap: h.kind == kindGap}
			if !rec.Gap {
				var err error
				if rec.Payload, buf, err = decompress(buf, h.codec, stored, 64<<20); err != nil {
					return fmt.Errorf("record %d at offset %d: %w", h.id, off, err)
				}
			}
			return fn(rec)
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	return scan.damage, nil
}

// Repair runs Open's recovery on dir (which must not be in use) and closes
// it again: damaged segments are moved aside as *.corrupt and replaced by
// their intact prefix. It returns the recovery's counters.
func Repair(dir string, opts Options) (Stats, error) {
	if _, err := os.Stat(dir); err != nil {
		return Stats{}, err
	}
	opts.noSpare = true
	l, err := Open(dir, opts)
	if err != nil {
		return Stats{}, err
	}
	st := l.Stats()
	if err := l.Close(); err != nil && !errors.Is(err, ErrClosed) {
		return st, err
	}
	return st, nil
}
