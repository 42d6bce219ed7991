package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestCPUProfileOnlyWhenAsked(t *testing.T) {
	stop, err := startCPUProfile(func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "cpu.pprof")
	stop, err = startCPUProfile(func(k string) string {
		if k == cpuProfileEnv {
			return path
		}
		return ""
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 1e6; i++ {
		_ = filepath.Join("a", "b")
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() == 0 {
		t.Fatalf("profile %s: %v (size %v)", path, err, fi)
	}
	if _, err := startCPUProfile(func(string) string { return filepath.Join(t.TempDir(), "no", "such", "dir") }); err == nil {
		t.Fatal("an unwritable profile path was accepted")
	}
}
