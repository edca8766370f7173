//! Property tests of the codec: round trips, arbitrary bytes, and every chunking of a stream.

use proptest::prelude::*;
use tether_proto::{drain_frames, feed, DecodeError, Decoder, Frame, Kind};

#[derive(Debug, Clone, PartialEq, Eq)]
struct Owned {
    kind: Kind,
    flags: u8,
    id: u64,
    body: Vec<u8>,
}

impl Owned {
    fn from_frame(f: Frame<'_>) -> Owned {
        Owned {
            kind: f.kind,
            flags: f.flags,
            id: f.id,
            body: f.body.to_vec(),
        }
    }
    fn encode(&self, out: &mut Vec<u8>) {
        Frame {
            kind: self.kind,
            flags: self.flags,
            id: self.id,
            body: &self.body,
        }
        .encode(out)
    }
}

fn owned_frame() -> impl Strategy<Value = Owned> {
    (
        proptest::sample::select(Kind::ALL.to_vec()),
        any::<u8>(),
        any::<u64>(),
        proptest::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(|(kind, flags, id, body)| Owned {
            kind,
            flags,
            id,
            body,
        })
}

/// A receiver that gets the stream in the given chunks, decoding as it goes.
fn receive_in_chunks(stream: &[u8], cuts: &[usize]) -> Result<Vec<Owned>, DecodeError> {
    let decoder = Decoder::new(1024);
    let mut buf = Vec::new();
    let mut frames = Vec::new();
    let mut start = 0;
    for &end in cuts.iter().chain(std::iter::once(&stream.len())) {
        buf.extend_from_slice(&stream[start..end]);
        start = end;
        drain_frames(&decoder, &mut buf, |f| {
            frames.push(Owned::from_frame(f));
            true
        })?;
    }
    assert!(buf.is_empty(), "bytes left over after a whole stream");
    Ok(frames)
}

/// The same receiver with `feed`: frames decoded in place, only split ones buffered.
fn feed_in_chunks(stream: &[u8], cuts: &[usize]) -> Result<Vec<Owned>, DecodeError> {
    let decoder = Decoder::new(1024);
    let mut partial = Vec::new();
    let mut frames = Vec::new();
    let mut start = 0;
    for &end in cuts.iter().chain(std::iter::once(&stream.len())) {
        feed(&decoder, &mut partial, &stream[start..end], |f| {
            frames.push(Owned::from_frame(f));
            true
        })?;
        start = end;
    }
    assert!(partial.is_empty(), "bytes left over after a whole stream");
    Ok(frames)
}

fn encode_all(frames: &[Owned]) -> Vec<u8> {
    let mut stream = Vec::new();
    for f in frames {
        f.encode(&mut stream);
    }
    stream
}

proptest! {
    #[test]
    fn round_trip(frames in proptest::collection::vec(owned_frame(), 0..20)) {
        let stream = encode_all(&frames);
        prop_assert_eq!(receive_in_chunks(&stream, &[]).unwrap(), frames);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048),
                                   max_body in 0u32..2048) {
        let decoder = Decoder::new(max_body);
        let mut at = 0;
        while let Ok(Some((frame, used))) = decoder.decode(&bytes[at..]) {
            prop_assert!(used >= 14);
            prop_assert!(frame.body.len() <= max_body as usize);
            at += used;
        }
    }

    #[test]
    fn random_chunking_decodes_the_same(frames in proptest::collection::vec(owned_frame(), 1..10),
                                        mut cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..30)) {
        let stream = encode_all(&frames);
        let mut cuts: Vec<usize> = cuts.drain(..).map(|i| i.index(stream.len() + 1)).collect();
        cuts.sort_unstable();
        prop_assert_eq!(receive_in_chunks(&stream, &cuts).unwrap(), frames.clone());
        prop_assert_eq!(feed_in_chunks(&stream, &cuts).unwrap(), frames);
    }
}

#[test]
fn every_split_point_and_byte_at_a_time_decode_the_same() {
    let frames: Vec<Owned> = (0..6u64)
        .map(|i| Owned {
            kind: Kind::ALL[i as usize % Kind::ALL.len()],
            flags: 0,
            id: i * 0x0101_0101,
            body: vec![i as u8; (i as usize * 37) % 90],
        })
        .collect();
    let stream = encode_all(&frames);
    for cut in 0..=stream.len() {
        assert_eq!(
            receive_in_chunks(&stream, &[cut]).unwrap(),
            frames,
            "split at {cut}"
        );
    }
    let every_byte: Vec<usize> = (1..stream.len()).collect();
    assert_eq!(receive_in_chunks(&stream, &every_byte).unwrap(), frames);
}

#[test]
fn an_error_mid_stream_is_reported_after_the_good_frames() {
    let mut stream = Vec::new();
    tether_proto::encode::frame(&mut stream, Kind::Data, 1, b"ok");
    stream.extend_from_slice(&3u32.to_be_bytes());
    let mut seen = Vec::new();
    let err = drain_frames(&Decoder::default(), &mut stream, |f| {
        seen.push(f.id);
        true
    })
    .unwrap_err();
    assert_eq!(seen, vec![1]);
    assert_eq!(err, DecodeError::BadFrame { len: 3 });
}
