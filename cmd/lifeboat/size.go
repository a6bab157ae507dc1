package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"T", 1 << 40},
	{"B", 1},
}

// parseSize reads a size written with an optional unit: 50GiB, 500MB, 1048576.
func parseSize(text string) (int64, error) {
	s := strings.TrimSpace(text)
	mult := int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f < 0 || math.IsNaN(f) || math.IsInf(f, 0) || f*float64(mult) >= math.MaxInt64 {
		return 0, fmt.Errorf("%q is not a size like 50GiB, 500MB or 1048576", text)
	}
	return int64(f * float64(mult)), nil
}

// diskFloor is a free-disk floor: a percentage of the filesystem ("10%")
// or a size ("20GiB").
type diskFloor struct {
	Bytes    int64
	Fraction float64
}

func parseDiskFloor(s string) (diskFloor, error) {
	if p, ok := strings.CutSuffix(strings.TrimSpace(s), "%"); ok {
		f, err := strconv.ParseFloat(p, 64)
		if err != nil || math.IsNaN(f) || f < 0 || f >= 100 {
			return diskFloor{}, fmt.Errorf("%q is not a percentage from 0 to 99", s)
		}
		return diskFloor{Fraction: f / 100}, nil
	}
	n, err := parseSize(s)
	return diskFloor{Bytes: n}, err
}
