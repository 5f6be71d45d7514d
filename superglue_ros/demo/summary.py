"""The demo's figures: per-frame records, latency / match statistics, ground-truth precision, and
summary.json / summary.md. Free of ROS: records are plain dicts built by the demo from Matches.

A correspondence is correct when the ground-truth homography maps its keyframe point to within
threshold_px of its frame point (both in pixels of the published images).

A track is one track id of the node (Matches.track_ids: one id per landmark, inherited across
keyframes); its length is the number of processed frames whose correspondences (inliers, when the
node verifies them) continued it.
"""
import json
from pathlib import Path

import cv2
import numpy as np

PRECISION_THRESHOLD_PX = 3.0
MEANINGLESS = 'MEANINGLESS (random weights)'
MEANINGLESS_NOTE = ('random weights were used: the pipeline, transport and timing are real, but the matches, '
                    'their count and their precision are MEANINGLESS')


def statistics(values) -> dict | None:
    """mean / p50 / p95 / max (and count) of a list of numbers; None when empty."""
    values = np.asarray(values, np.float64)
    if values.size == 0:
        return None
    return {'count': int(values.size), 'mean': float(values.mean()), 'p50': float(np.percentile(values, 50)),
            'p95': float(np.percentile(values, 95)), 'max': float(values.max())}


def correct_matches(keyframe_points, frame_points, homography, threshold_px: float = PRECISION_THRESHOLD_PX):
    """[K] bool: keyframe_points [K, 2] mapped by homography (keyframe -> frame pixels) land within
    threshold_px of frame_points [K, 2]."""
    keyframe_points = np.asarray(keyframe_points, np.float64).reshape(-1, 2)
    frame_points = np.asarray(frame_points, np.float64).reshape(-1, 2)
    if len(keyframe_points) == 0:
        return np.zeros(0, bool)
    mapped = cv2.perspectiveTransform(keyframe_points[:, None], np.asarray(homography, np.float64))[:, 0]
    return np.linalg.norm(mapped - frame_points, axis=1) <= threshold_px


def track_statistics(records: list[dict]) -> dict:
    """Tracks over the records' track_ids (each record: the track ids its frame continued, see the module
    doc): count, length in frames (statistics), and how many were continued under more than one
    keyframe id, i.e. inherited by a new keyframe."""
    frames, keyframes = {}, {}
    for r in records:
        for track_id in set(r.get('track_ids') or ()):
            frames[track_id] = frames.get(track_id, 0) + 1
            keyframes.setdefault(track_id, set()).add(r['keyframe_id'])
    return {'count': len(frames), 'length_frames': statistics(list(frames.values())),
            'across_keyframes': sum(len(ids) > 1 for ids in keyframes.values())}


LOOP_OVERLAP = 0.3  # a loop candidate is correct when it sees at least this fraction of the keyframe's image


def loop_figures(candidates: dict[int, list[tuple[int, float]]], positives: dict[int, set[int]]) -> dict:
    """Recall and precision of loop candidates against the ground truth.

    candidates: keyframe id -> its published candidates [(keyframe id, score)], most similar first.
    positives: keyframe id -> the earlier keyframe ids it may be matched to (a candidate could be: not
      among the excluded recent ones) that truly overlap it (LOOP_OVERLAP). recall@k: of the keyframes that
      have a positive, the share whose first k candidates hold one; precision: the share of all published
      candidates that are positives."""
    queries = [k for k in candidates if positives.get(k)]
    published = [(k, c) for k in candidates for c, _ in candidates[k]]
    correct = sum(c in positives.get(k, ()) for k, c in published)

    def recall(n):
        return (sum(any(c in positives[k] for c, _ in candidates[k][:n]) for k in queries) / len(queries)
                if queries else None)
    return {'keyframes': len(candidates), 'with_a_true_loop': len(queries), 'recall_at_1': recall(1),
            'recall_at_5': recall(5), 'candidates_published': len(published), 'candidates_correct': correct,
            'precision': correct / len(published) if published else None}


def loop_summary(loops: list[dict]) -> dict:
    """The loop candidates of a run: loops, one per LoopCandidates received, with keys keyframe_id,
    source_frame, candidates [(keyframe id, score)] and, where the source has ground truth, true_loops (the
    earlier keyframe ids that overlap it, Collector.finished_loops) and candidate_frames. figures:
    loop_figures() where there is ground truth, else None."""
    truth = [loop for loop in loops if 'true_loops' in loop]
    figures = loop_figures({loop['keyframe_id']: loop['candidates'] for loop in truth},
                           {loop['keyframe_id']: set(loop['true_loops']) for loop in truth}) if truth else None
    return {'keyframes': loops, 'figures': figures}


def summarize(records: list[dict], frames_published: int, match_images: int, meaningless: bool,
              settings: dict, threshold_px: float | None, publisher_error: str | None = None,
              skipped: list[dict] | None = None, loops: list[dict] | None = None) -> dict:
    """The summary of a run.

    records: one dict per Matches received, in arrival order, with keys stamp, keyframe_id, matched
      (False when the frame had no keyframe to match against), matches, is_new_keyframe, latency_ms,
      dropped_frames, match_image (file name or None); optionally inliers (None or absent: not verified),
      verified_with, track_ids (the track ids the frame continued; left out of summary['frames']) and,
      where the ground truth relates the frame and its keyframe, correct (number of correct
      correspondences) and correct_inliers (of the inliers, when verified).
    match_images: number of match images saved.
    threshold_px: the precision threshold when the source has ground truth, else None.
    publisher_error: why the publisher stopped early (its error line), or None when it published everything.
    skipped: the source frames the publisher could not decode, [{'index', 'reason'}] (its report).
    loops: the loop candidates received (loop_summary), or None.
    """
    matched = [r for r in records if r['matched']]
    verified = [r for r in matched if r.get('inliers') is not None]
    dropped = max((r['dropped_frames'] for r in records), default=0)  # the node's running count
    summary = {
        'meaningless': meaningless,
        'warning': MEANINGLESS_NOTE if meaningless else None,
        'settings': settings,
        'publisher_error': publisher_error,
        'frames_published': frames_published,
        'source_frames_skipped': list(skipped or []),
        'frames_processed': len(records),
        'frames_dropped': dropped,
        # lost in transport (best-effort QoS) or still queued when the run ended
        'frames_unaccounted': max(frames_published - len(records) - dropped, 0),
        'keyframes': sum(r['is_new_keyframe'] for r in records),
        'match_images': match_images,
        'latency_ms': statistics([r['latency_ms'] for r in records]),
        'matches_per_frame': statistics([r['matches'] for r in matched]),
        'inliers_per_frame': statistics([r['inliers'] for r in verified]),
        'verified_with': sorted({r['verified_with'] for r in verified}),
        'tracks': track_statistics(matched),
        'precision': None,
        'loop_candidates': loop_summary(loops or []),
        'frames': [{k: v for k, v in r.items() if k != 'track_ids'} for r in records],
    }
    if threshold_px is not None:
        checked = [r for r in matched if r.get('correct') is not None]
        evaluated, correct = sum(r['matches'] for r in checked), sum(r['correct'] for r in checked)
        summary['precision'] = {'threshold_px': threshold_px, 'correct': correct, 'evaluated': evaluated,
                                'value': correct / evaluated if evaluated else None}
        checked = [r for r in verified if r.get('correct_inliers') is not None]
        if checked:  # the same over the inliers only
            evaluated, correct = sum(r['inliers'] for r in checked), sum(r['correct_inliers'] for r in checked)
            summary['precision'].update(inliers_correct=correct, inliers_evaluated=evaluated,
                                        inliers_value=correct / evaluated if evaluated else None)
    return summary


def write_summary(summary: dict, directory: Path) -> tuple[Path, Path]:
    """summary.json and summary.md in directory."""
    directory = Path(directory)
    json_path, md_path = directory / 'summary.json', directory / 'summary.md'
    json_path.write_text(json.dumps(summary, indent=1))
    md_path.write_text(markdown(summary))
    return json_path, md_path


def _stat_line(stats: dict | None, unit: str = '', of: str = 'frames') -> str:
    if stats is None:
        return 'n/a'
    return (f"mean {stats['mean']:.1f}{unit}, p50 {stats['p50']:.1f}{unit}, p95 {stats['p95']:.1f}{unit}, "
            f"max {stats['max']:.1f}{unit} ({stats['count']} {of})")


def overview(summary: dict) -> list[str]:
    """The key figures, one per line (stdout and summary.md)."""
    precision = summary['precision']
    if precision is None:
        precision_line = 'n/a (the source has no ground truth)'
    elif precision['value'] is None:
        precision_line = f"n/a (no correspondences to check, threshold {precision['threshold_px']:g} px)"
    else:
        precision_line = (f"{precision['value']:.3f} ({precision['correct']} of {precision['evaluated']} "
                          f"correspondences within {precision['threshold_px']:g} px of the ground truth)")
    if precision is not None and precision.get('inliers_value') is not None:
        precision_line += (f"; inliers {precision['inliers_value']:.3f} ({precision['inliers_correct']} of "
                           f"{precision['inliers_evaluated']})")
    tracks = summary['tracks']
    lines = [
        f"frames published: {summary['frames_published']}",
        f"frames processed: {summary['frames_processed']} (Matches received)",
        f"frames dropped by the node: {summary['frames_dropped']}",
        f"frames unaccounted for (lost in transport or unprocessed at the end): {summary['frames_unaccounted']}",
        f"latency (receipt to publish): {_stat_line(summary['latency_ms'], ' ms')}",
        f"matches per frame: {_stat_line(summary['matches_per_frame'])}",
        f"inliers per frame ({', '.join(summary['verified_with']) or 'not verified'}): "
        f"{_stat_line(summary['inliers_per_frame'])}",
        f"tracks: {tracks['count']}, length in frames {_stat_line(tracks['length_frames'], of='tracks')}; "
        f"{tracks['across_keyframes']} continued past a new keyframe",
        f"keyframes taken: {summary['keyframes']}",
        f"match precision: {precision_line}",
        f"loop candidates: {_loop_line(summary.get('loop_candidates'))}",
        f"match images saved: {summary['match_images']}",
    ]
    if summary['meaningless']:
        lines = [f'{MEANINGLESS}: {MEANINGLESS_NOTE}'] + lines
    if summary.get('source_frames_skipped'):
        skipped = summary['source_frames_skipped']
        lines.insert(1 + int(summary['meaningless']),  # after "frames published"
                     f"source frames skipped (could not be decoded, not published): {len(skipped)}; first: "
                     f"{skipped[0]['reason']}")
    if summary.get('publisher_error'):  # the frames it did publish are accounted for as usual
        lines.insert(int(summary['meaningless']), f"the publisher stopped early, after {summary['frames_published']} "
                                                  f"frames: {summary['publisher_error']}")
    return lines


def _loop_line(loops: dict | None) -> str:
    if not loops or not loops['keyframes']:
        return 'none received'
    published = sum(len(loop['candidates']) for loop in loops['keyframes'])
    line = f"{published} for {len(loops['keyframes'])} keyframes"
    f = loops['figures']
    if f is None:
        return line + ' (the source has no ground truth)'
    if f['recall_at_1'] is None:
        return line + f'; no keyframe revisits an earlier place (ground truth; the revisit path does: --path revisit)'
    precision = 'n/a' if f['precision'] is None else f"{f['precision']:.3f}"
    return (line + f"; {f['with_a_true_loop']} keyframes revisit an earlier place: recall@1 {f['recall_at_1']:.3f}, "
            f"recall@5 {f['recall_at_5']:.3f}; precision {precision} ({f['candidates_correct']} of "
            f"{f['candidates_published']} candidates see >= {LOOP_OVERLAP:g} of the keyframe's image)")


def markdown(summary: dict) -> str:
    title = '# superglue_ros demo' + (f' - {MEANINGLESS}' if summary['meaningless'] else '')
    lines = [title, '']
    if summary['meaningless']:
        lines += [f'**{MEANINGLESS}**: {MEANINGLESS_NOTE}.', '']
    lines += [f'- {line}' for line in overview(summary)[1 if summary['meaningless'] else 0:]]
    lines += ['', '## Settings', '']
    lines += [f'- {key}: `{value}`' for key, value in summary['settings'].items()]
    lines += ['', '## Frames', '', "frame: the frame of the sequence, where the source has ground truth.", '',
              '| stamp (s) | frame | keyframe id (frame) | new keyframe | matches | correct | inliers | latency (ms) '
              '| match image |', '|---|---|---|---|---|---|---|---|---|']
    for r in summary['frames']:
        correct = '' if r.get('correct') is None or not r['matched'] else r['correct']
        inliers = '' if r.get('inliers') is None or not r['matched'] else r['inliers']
        keyframe = f"{r['keyframe_id']}" + (f" ({r['keyframe_source_frame']})" if 'keyframe_source_frame' in r else '')
        lines.append(f"| {r['stamp']:.6f} | {r.get('source_frame', '')} | {keyframe} | "
                     f"{'yes' if r['is_new_keyframe'] else ''} | {r['matches'] if r['matched'] else '-'} | {correct} | "
                     f"{inliers} | {r['latency_ms']:.1f} | {r['match_image'] or ''} |")
    loops = (summary.get('loop_candidates') or {}).get('keyframes') or []
    if loops:
        lines += ['', '## Loop candidates', '', 'keyframe id (frame of the sequence): candidates as id (frame) score, '
                  'most similar first; true loops: the earlier keyframes that overlap it (ground truth).', '',
                  '| keyframe | candidates | true loops |', '|---|---|---|']
        for loop in loops:
            frames = loop.get('candidate_frames') or [None] * len(loop['candidates'])
            candidates = ', '.join(f"{k}{'' if f is None else f' ({f})'} {score:.2f}"
                                   for (k, score), f in zip(loop['candidates'], frames))
            source = '' if loop.get('source_frame') is None else f" ({loop['source_frame']})"
            lines.append(f"| {loop['keyframe_id']}{source} | {candidates} | "
                         f"{', '.join(map(str, loop.get('true_loops', [])))} |")
    return '\n'.join(lines) + '\n'


def stamp_meaningless(image: np.ndarray) -> np.ndarray:
    """A copy of a bgr8 image with a red MEANINGLESS banner along its bottom edge."""
    image = image.copy()
    height, width = image.shape[:2]
    scale = float(np.clip(width / 1400, 0.4, 1.5))
    (text_width, text_height), _ = cv2.getTextSize(MEANINGLESS, cv2.FONT_HERSHEY_DUPLEX, scale, 1)
    bar = min(int(text_height * 2.2), height)
    image[height - bar:] = (0, 0, 200)
    cv2.putText(image, MEANINGLESS, (max((width - text_width) // 2, 2), height - (bar - text_height) // 2),
                cv2.FONT_HERSHEY_DUPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return image
