package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"image"
	"image/jpeg"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// runBench is `mlserve bench`: a load generator for any Immich-compatible
// machine-learning server (mlserve or Immich's own), shaped like Immich's
// locustfile: CLIP text, CLIP image, or face detection + recognition
// requests, built exactly as the Immich server builds them.
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", "http://127.0.0.1:3003", "server base URL")
	task := fs.String("task", "clip-visual", "clip-visual | clip-textual | faces | ocr")
	clipModel := fs.String("clip-model", "ViT-B-32__openai", "CLIP model name")
	faceModel := fs.String("face-model", "buffalo_l", "face model name")
	ocrModel := fs.String("ocr-model", "PP-OCRv5_mobile", "OCR model name")
	minScore := fs.Float64("face-min-score", 0.034, "face detection minScore (Immich's locustfile uses 0.034)")
	imagePath := fs.String("image", "", "JPEG to send (default: a black JPEG of -image-size, as Immich's locustfile)")
	imageSize := fs.Int("image-size", 1000, "side of the generated test image")
	text := fs.String("text", "test search query", "query for clip-textual")
	concurrency := fs.Int("concurrency", 2, "requests in flight")
	requests := fs.Int("requests", 100, "requests to send (after one warm-up request)")
	duration := fs.Duration("duration", 0, "run for this long instead of a number of requests")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var img []byte
	if *imagePath != "" {
		b, err := os.ReadFile(*imagePath)
		if err != nil {
			return err
		}
		img = b
	} else {
		var buf bytes.Buffer
		m := image.NewRGBA(image.Rect(0, 0, *imageSize, *imageSize))
		for i := range m.Pix {
			if i%4 == 3 {
				m.Pix[i] = 255
			}
		}
		if err := jpeg.Encode(&buf, m, &jpeg.Options{Quality: 80}); err != nil {
			return err
		}
		img = buf.Bytes()
	}
	var entries string
	switch *task {
	case "clip-visual":
		entries = fmt.Sprintf(`{"clip":{"visual":{"modelName":%q}}}`, *clipModel)
	case "clip-textual":
		entries = fmt.Sprintf(`{"clip":{"textual":{"modelName":%q,"options":{}}}}`, *clipModel)
		img = nil
	case "faces":
		entries = fmt.Sprintf(`{"facial-recognition":{"detection":{"modelName":%q,"options":{"minScore":%g}},"recognition":{"modelName":%q}}}`, *faceModel, *minScore, *faceModel)
	case "ocr":
		entries = fmt.Sprintf(`{"ocr":{"detection":{"modelName":%q,"options":{"minScore":0.5,"maxResolution":736}},"recognition":{"modelName":%q,"options":{"minScore":0.8}}}}`, *ocrModel, *ocrModel)
	default:
		return fmt.Errorf("unknown task %q", *task)
	}
	client := &http.Client{Timeout: 10 * time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: *concurrency}}
	send := func() (time.Duration, int, error) {
		body, ctype, err := immichForm(entries, img, *text)
		if err != nil {
			return 0, 0, err
		}
		start := time.Now()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, *url+"/predict", body)
		if err != nil {
			return 0, 0, err
		}
		req.Header.Set("Content-Type", ctype)
		resp, err := client.Do(req)
		if err != nil {
			return 0, 0, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return time.Since(start), resp.StatusCode, nil
	}
	if _, code, err := send(); err != nil || code != http.StatusOK {
		return fmt.Errorf("warm-up request failed: status %d, %v", code, err)
	}

	var (
		mu        sync.Mutex
		latencies []time.Duration
		codes     = map[int]int{}
		errs      int
		sent      atomic.Int64
	)
	deadline := time.Time{}
	if *duration > 0 {
		deadline = time.Now().Add(*duration)
	}
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < *concurrency; w++ {
		wg.Go(func() {
			for ctx.Err() == nil {
				if deadline.IsZero() {
					if sent.Add(1) > int64(*requests) {
						return
					}
				} else if time.Now().After(deadline) {
					return
				}
				d, code, err := send()
				mu.Lock()
				if err != nil {
					errs++
				} else {
					codes[code]++
					if code == http.StatusOK {
						latencies = append(latencies, d)
					}
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	wall := time.Since(start)
	if len(latencies) == 0 {
		return errors.New("no successful requests")
	}
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	pct := func(p float64) time.Duration { return latencies[int(p*float64(len(latencies)-1))] }
	var sum time.Duration
	for _, d := range latencies {
		sum += d
	}
	fmt.Fprintf(stdout, "task %s, %d ok in %v with %d in flight: %.2f req/s\n", *task, len(latencies), wall.Round(time.Millisecond), *concurrency, float64(len(latencies))/wall.Seconds())
	fmt.Fprintf(stdout, "latency mean %v  p50 %v  p90 %v  p99 %v  max %v\n",
		(sum / time.Duration(len(latencies))).Round(time.Microsecond*100), pct(.5).Round(time.Microsecond*100),
		pct(.9).Round(time.Microsecond*100), pct(.99).Round(time.Microsecond*100), latencies[len(latencies)-1].Round(time.Microsecond*100))
	fmt.Fprintf(stdout, "status codes %v, transport errors %d\n", codes, errs)
	return nil
}

// immichForm builds the multipart body the Immich server sends (undici's
// FormData): "entries" first, then the image as a Blob part named "blob"
// of type application/octet-stream, or the text field.
func immichForm(entries string, img []byte, text string) (io.Reader, string, error) {
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	if err := w.WriteField("entries", entries); err != nil {
		return nil, "", err
	}
	if img != nil {
		h := textproto.MIMEHeader{}
		h.Set("Content-Disposition", `form-data; name="image"; filename="blob"`)
		h.Set("Content-Type", "application/octet-stream")
		p, err := w.CreatePart(h)
		if err != nil {
			return nil, "", err
		}
		if _, err := p.Write(img); err != nil {
			return nil, "", err
		}
	} else if err := w.WriteField("text", text); err != nil {
		return nil, "", err
	}
	if err := w.Close(); err != nil {
		return nil, "", err
	}
	return &buf, w.FormDataContentType(), nil
}
