package wal

import (
	"crypto/cipher"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
)

// indexEvery is the spacing of the sparse per-segment index ReadRange uses
// to start near the records it wants instead of at the segment's start.
const indexEvery = 64

// indexEntry locates one record: every indexEvery-th record of a segment.
type indexEntry struct {
	id  uint64
	off int64
}

// ReadRange calls fn, in id order, for every data record with from <= id <=
// to that is on disk, with its decompressed payload (valid only during the
// call). It reads the segment files through their own read-only mappings,
// so it can run while the Log appends; pass only ids whose Append or Write
// has returned (it reads up to what was written when it was called). Ids
// acknowledged and deleted meanwhile are skipped. A record in the range
// that does not verify is an ErrCorrupt error, never skipped silently.
// A keyed record's payload is its items alone (its keys are dropped).
// This is how a queue reads back what it spilled.
func (l *Log) ReadRange(from, to uint64, fn func(id uint64, payload []byte) error) error {
	if l.isClosed.Load() {
		return ErrClosed
	}
	if from > to {
		return nil
	}
	type view struct {
		name    string
		firstID uint64
		end     int64
		index   []indexEntry
		aead    cipher.AEAD
		frame   recordFraming
	}
	var views []view
	l.mu.Lock()
	for _, s := range l.segs {
		if s.lastID < s.firstID || s.lastID < from || s.firstID > to {
			continue
		}
		end := s.end // recovered
		if end == 0 {
			end = s.pos // written by this Log: up to what is written now
		}
		views = append(views, view{s.name, s.firstID, end, s.index[:len(s.index):len(s.index)], s.aead, s.frame})
	}
	l.mu.Unlock()

	limit := l.opts.readLimit()
	rr := recordReader{limit: limit}
	for _, v := range views {
		data, unmap, err := mapFile(filepath.Join(l.dir, v.name))
		if errors.Is(err, os.ErrNotExist) {
			continue // deleted meanwhile: all of it was acknowledged
		}
		if err != nil {
			return fmt.Errorf("wal: read range: %w", err)
		}
		err = withFaultsAsErrors(func() error {
			if int64(len(data)) < v.end {
				return fmt.Errorf("%w: %s shrank to %d bytes", ErrCorrupt, v.name, len(data))
			}
			pos, prev := int64(segmentHeaderSize), v.firstID-1
			if i := sort.Search(len(v.index), func(i int) bool { return v.index[i].id > from }); i > 0 {
				pos, prev = v.index[i-1].off, v.index[i-1].id-1
			}
			for pos < v.end {
				want := prev + 1
				// Records before the range are only stepped over.
				h, stored, size, err := decodeRecordCRC(data[pos:v.end], limit, want, want >= from, v.frame)
				if err != nil {
					return fmt.Errorf("%w: %s offset %d: %v", ErrCorrupt, v.name, pos, err)
				}
				pos += size
				prev = h.id
				if h.id > to {
					return errStopRange
				}
				if h.kind != kindData || h.id < from {
					continue
				}
				raw, err := rr.payload(v.aead, &h, stored)
				if err == nil && h.keyed {
					raw, _, _, err = splitKeyed(raw)
				}
				if err != nil {
					return fmt.Errorf("%s record %d: %w", v.name, h.id, err)
				}
				if err := fn(h.id, raw); err != nil {
					return err
				}
			}
			return nil
		})
		unmap()
		if errors.Is(err, errStopRange) {
			return nil
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// errStopRange ends a segment walk once the range is done.
var errStopRange = errors.New("wal: range done")
