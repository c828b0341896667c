// The pairing rule of maefusemux, the same as maefuse_deploy/stream/pairing.py's (docs/streaming.md, "Pairing"):
//
//   The output runs at the VIS rate. Each VIS frame is fused with the IR frame whose timestamp, plus the IR offset,
//   is nearest to it (on a tie, the earlier IR frame), when they are at most the tolerance apart; otherwise the VIS
//   frame is unpaired (counted, dropped). An IR frame may serve several VIS frames (IR slower than VIS: counted as
//   reused); IR frames no VIS frame chose are counted unpaired. Times are compared as integer nanoseconds, so the
//   Python pairer and this element decide ties and the tolerance boundary identically. The default tolerance is
//   half the slower source's frame period.
//
// Kept free of GStreamer so the C++ tests run the shared cases (tests/data/pairing_cases.json) through it.
#pragma once

#include <algorithm>
#include <cstdint>

namespace maefuse_pairing {

enum class Choice { held, next, none };

// `held`: the latest IR frame at or before the VIS time; `next`: the first IR frame after it. Every time in
// nanoseconds, IR times already shifted by the IR offset; `tolerance` < 0 means no limit.
inline Choice choose(bool has_held, int64_t held, bool has_next, int64_t next, int64_t vis, int64_t tolerance) {
    Choice choice = Choice::none;
    int64_t distance = 0;
    if (has_held) {
        choice = Choice::held;
        distance = vis - held;
    }
    if (has_next && (choice == Choice::none || next - vis < distance)) {
        choice = Choice::next;
        distance = next - vis;
    }
    if (choice != Choice::none && tolerance >= 0 && distance > tolerance) choice = Choice::none;
    return choice;
}

// Half the slower source's frame period in nanoseconds, from the periods known (<= 0: unknown); -1 (no limit)
// when neither is known.
inline int64_t default_tolerance(int64_t ir_period, int64_t vis_period) {
    const int64_t slower = std::max(ir_period, vis_period);
    return slower > 0 ? slower / 2 : -1;
}

}  // namespace maefuse_pairing
