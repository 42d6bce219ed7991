package bench

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"image/color"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// Row IDs, in the order the bench runs them for each N (issue 9's letters; c-max is (c) with
// --max-speed, the polite default's fast counterpart).
const (
	rowReplace   = "a"
	rowAnnotateK = "b"
	rowRaw       = "e"
	rowMaxSpeed  = "c-max"
	rowFunctions = "g"
	rowRewrite   = "c"
	rowConverged = "f"
	rowAnnotate  = "d"
)

// Encryption providers of a row.
const (
	encKMS    = "kmsv2"
	encAESCBC = "aescbc"
)

// row is one measured method at one N.
type row struct {
	N          int    `json:"n"`
	ID         string `json:"id"`
	Method     string `json:"method"`
	Encryption string `json:"encryption"`
	// Objects is what the method faced: the stale Secrets after the rotation (all of them for the
	// converged re-run).
	Objects int64 `json:"objects"`
	// Written counts the Secrets whose etcd revision changed during the row.
	Written          int64   `json:"written"`
	Seconds          float64 `json:"seconds"`
	ObjectsPerSecond float64 `json:"objectsPerSecond"`
	// VsReplace and VsRaw are the rate's ratios to rows a and e at the same N (0: not measured).
	VsReplace float64 `json:"vsReplace,omitempty"`
	VsRaw     float64 `json:"vsRaw,omitempty"`
	// PeakRSSKiB is the client's peak resident set (VmHWM; summed over a pipeline's processes).
	PeakRSSKiB       int64   `json:"peakRssKiB"`
	ClientCPUSeconds float64 `json:"clientCpuSeconds"`
	// BytesReceived is what the API server sent the client (TLS included), counted by a proxy.
	BytesReceived int64 `json:"bytesReceived"`
	// KMSEncrypt and KMSDecrypt are the KMS stand-in's calls during the row.
	KMSEncrypt int64 `json:"kmsEncrypt"`
	KMSDecrypt int64 `json:"kmsDecrypt"`
	// RotationKMSEncrypt and RotationKMSDecrypt are the calls during the rotation before the row
	// and the wait for the API server to adopt it.
	RotationKMSEncrypt int64 `json:"rotationKmsEncrypt"`
	RotationKMSDecrypt int64 `json:"rotationKmsDecrypt"`
	// APIServerCPUPer1k and EtcdCPUPer1k are CPU seconds per 1,000 objects.
	APIServerCPUPer1k float64 `json:"apiserverCpuPer1k"`
	EtcdCPUPer1k      float64 `json:"etcdCpuPer1k"`
	// Foreground is the foreground client's GET latency during the row.
	Foreground foregroundStats `json:"foreground"`
	// PassObjectsPerSecond is the functions' engine pass alone (row g; 0 elsewhere).
	PassObjectsPerSecond float64 `json:"passObjectsPerSecond,omitempty"`
	// Rounds are ObjectsPerSecond in every round of a row run in rounds, in order (PassRounds:
	// PassObjectsPerSecond); the row's other figures are its median round's.
	Rounds     []float64 `json:"rounds,omitempty"`
	PassRounds []float64 `json:"passRounds,omitempty"`
	Note       string    `json:"note,omitempty"`
}

// report is everything one make bench run measured.
type report struct {
	Date       string                  `json:"date"`
	Cores      int                     `json:"cores"`
	CPU        string                  `json:"cpu"`
	SecretSize int                     `json:"secretBytes"`
	Namespaces int                     `json:"namespaces"`
	Ns         []int                   `json:"n"`
	Idle       map[int]foregroundStats `json:"idleForeground"`
	Rows       []row                   `json:"rows"`
	Targets    []target                `json:"targets,omitempty"`
	Profile    string                  `json:"profile,omitempty"`
	Notes      []string                `json:"notes,omitempty"`
}

func (r *report) find(n int, id, enc string) *row {
	for i := range r.Rows {
		if x := &r.Rows[i]; x.N == n && x.ID == id && x.Encryption == enc {
			return x
		}
	}
	return nil
}

// ratios fills VsReplace and VsRaw from the rows a and e of the same N and encryption.
func (r *report) ratios() {
	for i := range r.Rows {
		x := &r.Rows[i]
		if a := r.find(x.N, rowReplace, x.Encryption); a != nil && a.ObjectsPerSecond > 0 {
			x.VsReplace = x.ObjectsPerSecond / a.ObjectsPerSecond
		}
		if e := r.find(x.N, rowRaw, x.Encryption); e != nil && e.ObjectsPerSecond > 0 {
			x.VsRaw, _ = paired(x.ObjectsPerSecond, x.Rounds, e.ObjectsPerSecond, e.Rounds)
		}
	}
}

// collapse keeps one row per ID of the rows at (n, enc) that ran in rounds: the median round
// (by the pass rate for g, by objects/s otherwise; the lower of the two middle ones for an even
// count), with every round's rates in Rounds and PassRounds. It stays where the ID's first round
// was.
func (r *report) collapse(n int, enc string) {
	byID := map[string][]int{}
	for i, x := range r.Rows {
		if x.N == n && x.Encryption == enc {
			byID[x.ID] = append(byID[x.ID], i)
		}
	}
	drop := map[int]bool{}
	for _, idx := range byID {
		if len(idx) < 2 {
			continue
		}
		key := func(i int) float64 {
			if r.Rows[i].PassObjectsPerSecond > 0 {
				return r.Rows[i].PassObjectsPerSecond
			}
			return r.Rows[i].ObjectsPerSecond
		}
		var rounds, pass []float64
		for _, i := range idx {
			rounds = append(rounds, r.Rows[i].ObjectsPerSecond)
			if p := r.Rows[i].PassObjectsPerSecond; p > 0 {
				pass = append(pass, p)
			}
		}
		sorted := slices.Clone(idx)
		slices.SortStableFunc(sorted, func(a, b int) int { return cmp.Compare(key(a), key(b)) })
		med := r.Rows[sorted[(len(sorted)-1)/2]]
		med.Rounds = rounds
		if len(pass) == len(idx) {
			med.PassRounds = pass
		}
		r.Rows[idx[0]] = med
		for _, i := range idx[1:] {
			drop[i] = true
		}
	}
	kept := r.Rows[:0]
	for i, x := range r.Rows {
		if !drop[i] {
			kept = append(kept, x)
		}
	}
	r.Rows = kept
}

// paired is the rate x over the rate y. When both ran in the same rounds (back to back in each),
// it is the median of the rounds' ratios, which drift between rounds does not move, and each
// round's ratio is returned too; otherwise it is x / y.
func paired(x float64, xr []float64, y float64, yr []float64) (float64, []float64) {
	if len(xr) < 2 || len(xr) != len(yr) {
		if y <= 0 {
			return 0, nil
		}
		return x / y, nil
	}
	each := make([]float64, len(xr))
	for i := range xr {
		if yr[i] <= 0 {
			return 0, nil
		}
		each[i] = xr[i] / yr[i]
	}
	s := slices.Sorted(slices.Values(each))
	return s[(len(s)-1)/2], each
}

// roundsNote lists a row's rounds for the results page ("" for a row run once).
func roundsNote(x row) string {
	if len(x.Rounds) < 2 {
		return ""
	}
	list := func(v []float64) string {
		var s []string
		for _, f := range v {
			s = append(s, fmt.Sprintf("%.0f", f))
		}
		return strings.Join(s, ", ")
	}
	note := fmt.Sprintf("median of %d rounds: %s obj/s", len(x.Rounds), list(x.Rounds))
	if len(x.PassRounds) == len(x.Rounds) {
		note += fmt.Sprintf(" (pass %s obj/s)", list(x.PassRounds))
	}
	return note
}

func mib(kib int64) string {
	if kib == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f", float64(kib)/1024)
}

func ratio(x float64) string {
	if x == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", x)
}

// markdown renders the report as the results page's tables.
func (r *report) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# make bench results (%s)\n\n", r.Date)
	fmt.Fprintf(&b, "Machine: %d cores (%s). Secrets of %d random bytes across %d namespaces; the KMS v2 chain "+
		"(rekey's plugin and the KMS stand-in) encrypts them. Before every row but f the key is rotated and the bench "+
		"waits until the API server writes with the new version; after it, etcd is scanned: every row left 0 Secrets "+
		"stale. Every client reaches the API server through a byte-counting TCP proxy.\n\n", r.Cores, r.CPU, r.SecretSize, r.Namespaces)
	b.WriteString("Foreground: a client GETs one Secret every 50 ms on its own connection during each row.\n\n")
	for _, n := range r.Ns {
		idle := r.Idle[n]
		fmt.Fprintf(&b, "## N = %d\n\n", n)
		fmt.Fprintf(&b, "Idle foreground GET: p50 %.2f ms, p99 %.2f ms (%d samples).\n\n", idle.P50ms, idle.P99ms, idle.Samples)
		b.WriteString("| row | method | wall s | obj/s | vs (a) | vs (e) | peak RSS MiB | client CPU s | MiB received | KMS Encrypt/Decrypt: row (rotation) | apiserver CPU s/1k | etcd CPU s/1k | written | fg p50 / p99 ms (p99 x idle) | aescbc obj/s |\n")
		b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, x := range r.Rows {
			if x.N != n || x.Encryption != encKMS {
				continue
			}
			aes := "-"
			if a := r.find(n, x.ID, encAESCBC); a != nil {
				aes = fmt.Sprintf("%.0f", a.ObjectsPerSecond)
			}
			fg := "-"
			if x.Foreground.Samples > 0 {
				fg = fmt.Sprintf("%.2f / %.2f", x.Foreground.P50ms, x.Foreground.P99ms)
				if idle.P99ms > 0 {
					fg += fmt.Sprintf(" (%.1fx)", x.Foreground.P99ms/idle.P99ms)
				}
			}
			method := x.Method
			if x.Note != "" {
				method += " — " + x.Note
			}
			if rn := roundsNote(x); rn != "" {
				method += "; " + rn
			}
			method = strings.ReplaceAll(method, "|", `\|`)
			fmt.Fprintf(&b, "| %s | %s | %.2f | %.0f | %s | %s | %s | %.1f | %.1f | %d/%d (%d/%d) | %.2f | %.2f | %d | %s | %s |\n",
				x.ID, method, x.Seconds, x.ObjectsPerSecond, ratio(x.VsReplace), ratio(x.VsRaw), mib(x.PeakRSSKiB), x.ClientCPUSeconds,
				float64(x.BytesReceived)/(1<<20), x.KMSEncrypt, x.KMSDecrypt, x.RotationKMSEncrypt, x.RotationKMSDecrypt, x.APIServerCPUPer1k, x.EtcdCPUPer1k, x.Written, fg, aes)
		}
		b.WriteString("\n")
	}
	b.WriteString(targetsMarkdown(r.Targets))
	if len(r.Notes) > 0 {
		b.WriteString("## Notes\n\n")
		for _, n := range r.Notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
		b.WriteString("\n")
	}
	if r.Profile != "" {
		b.WriteString("## rekey CPU profile (top of `go tool pprof -top`)\n\n```\n" + r.Profile + "\n```\n")
	}
	return b.String()
}

// write saves results.md, results.json and results.png under dir.
func (r *report) write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("results: %w", err)
	}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("results: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), append(js, '\n'), 0o644); err != nil {
		return fmt.Errorf("results: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "results.md"), []byte(r.markdown()), 0o644); err != nil {
		return fmt.Errorf("results: %w", err)
	}
	png, err := r.chart()
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.png"), png, 0o644); err != nil {
		return fmt.Errorf("results: %w", err)
	}
	return nil
}

// chart draws objects/s and peak RSS against N for each KMS v2 row, side by side.
func (r *report) chart() ([]byte, error) {
	rate := plot.New()
	rate.Title.Text = "Throughput (KMS v2)"
	rate.X.Label.Text = "Secrets (N)"
	rate.Y.Label.Text = "objects/s"
	rss := plot.New()
	rss.Title.Text = "Client peak RSS"
	rss.X.Label.Text = "Secrets (N)"
	rss.Y.Label.Text = "MiB (VmHWM)"
	for _, p := range []*plot.Plot{rate, rss} {
		p.Y.Min = 0
		p.Legend.Top = true
		p.Legend.Left = true
		p.Add(plotter.NewGrid())
		if len(r.Ns) > 1 {
			p.X.Scale = plot.LogScale{}
			p.X.Tick.Marker = plot.LogTicks{Prec: -1}
		}
	}
	var ids []string
	for _, x := range r.Rows {
		if x.Encryption == encKMS && !slices.Contains(ids, x.ID) {
			ids = append(ids, x.ID)
		}
	}
	for i, id := range ids {
		var rp, mp plotter.XYs
		label := id
		for _, n := range r.Ns {
			x := r.find(n, id, encKMS)
			if x == nil {
				continue
			}
			label = id + ": " + shortMethod(x.Method)
			rp = append(rp, plotter.XY{X: float64(n), Y: x.ObjectsPerSecond})
			if x.PeakRSSKiB > 0 {
				mp = append(mp, plotter.XY{X: float64(n), Y: float64(x.PeakRSSKiB) / 1024})
			}
		}
		for _, xy := range rp {
			rate.Y.Max = max(rate.Y.Max, xy.Y*1.4) // room for the legend
		}
		for _, xy := range mp {
			rss.Y.Max = max(rss.Y.Max, xy.Y*1.4, 64*1.4)
		}
		if err := addSeries(rate, i, label, rp); err != nil {
			return nil, err
		}
		if err := addSeries(rss, i, label, mp); err != nil {
			return nil, err
		}
	}
	limit := plotter.NewFunction(func(float64) float64 { return 64 })
	limit.Color = color.RGBA{R: 200, A: 255}
	limit.Dashes = []vg.Length{vg.Points(4), vg.Points(4)}
	rss.Add(limit)
	rss.Legend.Add("64 MiB target", limit)

	img := vgimg.New(vg.Points(1100), vg.Points(450))
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 1, Cols: 2, PadX: vg.Millimeter * 6, PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2,
		PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}
	canvases := plot.Align([][]*plot.Plot{{rate, rss}}, tiles, dc)
	rate.Draw(canvases[0][0])
	rss.Draw(canvases[0][1])
	var buf bytes.Buffer
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(&buf); err != nil {
		return nil, fmt.Errorf("chart: %w", err)
	}
	return buf.Bytes(), nil
}

// seriesColors tells the rows apart: one color per row (plotutil's palettes have seven).
var seriesColors = []color.Color{
	color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}, // a
	color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff}, // b
	color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}, // c-max
	color.RGBA{R: 0x17, G: 0xbe, B: 0xcf, A: 0xff}, // c
	color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 0xff}, // f
	color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff}, // d
	color.RGBA{R: 0x7f, G: 0x7f, B: 0x7f, A: 0xff}, // e
	color.RGBA{R: 0x8c, G: 0x56, B: 0x4b, A: 0xff}, // g
}

// addSeries draws one row's points as line i of p, with a legend entry (nothing for no points).
func addSeries(p *plot.Plot, i int, label string, xys plotter.XYs) error {
	if len(xys) == 0 {
		return nil
	}
	l, pts, err := plotter.NewLinePoints(xys)
	if err != nil {
		return fmt.Errorf("chart: %s: %w", label, err)
	}
	c := seriesColors[i%len(seriesColors)]
	l.Color, pts.Color = c, c
	l.Dashes = plotutil.Dashes(i)
	pts.Shape = plotutil.Shape(i)
	p.Add(l, pts)
	p.Legend.Add(label, l, pts)
	return nil
}

// shortMethod is a row's method without its flags' details, for the legend.
func shortMethod(m string) string {
	if r := []rune(m); len(r) > 46 {
		return string(r[:45]) + "…"
	}
	return m
}
