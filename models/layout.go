package models

import (
	"fmt"
	"path/filepath"
)

// ModelFile is the ONNX file name of every model type (Immich's
// <dir>/<type>/model.onnx).
const ModelFile = "model.onnx"

// Files lists the files a loader of typ needs, relative to the folder that
// [Store.Ensure] returns. Their presence is the "cached" check: when all are
// regular files, Ensure touches no network. (Immich checks only the model
// file; the sidecars are added because a loader fails without them.)
func (i Info) Files(typ Type) []string {
	if i.Task != TaskCLIP {
		return []string{ModelFile}
	}
	switch typ {
	case TypeVisual:
		return []string{"visual/" + ModelFile, "visual/preprocess_cfg.json"}
	case TypeTextual:
		return []string{"textual/" + ModelFile, "textual/tokenizer.json", "textual/tokenizer_config.json", "config.json"}
	}
	return nil
}

// folderKey is "<task>/<folder>": the unit that is downloaded and cleared
// (Immich's InferenceModel.cache_dir), relative to the cache root.
func folderKey(info Info, typ Type) string {
	return string(info.Task) + "/" + info.Folder(typ)
}

// Dir returns the folder a loader reads for (info, typ) under cacheDir,
// without touching the disk: <cache>/clip/<name> for both CLIP types (the
// towers are in visual/ and textual/ below it, config.json at its top),
// <cache>/facial-recognition/<name>/<type> for faces, and
// <cache>/ocr/<folder>/<type> for OCR, where detection's folder drops the
// "LANG__" prefix.
func Dir(cacheDir string, info Info, typ Type) (string, error) {
	if !info.Supports(typ) {
		return "", fmt.Errorf("%w: %s/%s with %q", ErrUnsupported, info.Task, typ, info.Name)
	}
	base := filepath.Join(cacheDir, string(info.Task), info.Folder(typ))
	if info.Task == TaskCLIP {
		return base, nil
	}
	return filepath.Join(base, string(typ)), nil
}
