use std::time::Instant;
use wgpu_rnn::*;

#[test]
#[ignore]
fn timing() {
    let ctx = GpuContext::new().unwrap();
    for (mode, h, n) in [
        (RnnMode::Rnn(Nonlinearity::Tanh), 64, 1),
        (RnnMode::Lstm, 64, 1),
        (RnnMode::Gru, 64, 1),
        (RnnMode::Rnn(Nonlinearity::Tanh), 256, 16),
        (RnnMode::Lstm, 256, 16),
        (RnnMode::Gru, 256, 16),
    ] {
        let t = 1024;
        let config = RnnConfig::new(mode, 64, h);
        let w = RnnWeights::init(&config, 1).unwrap();
        for rec in [Recurrence::Persistent, Recurrence::PerStep] {
            if h == 256 && rec == Recurrence::PerStep { continue; }
            let mut m = GpuTrainer::new(&ctx, config.clone(), &w).unwrap().with_recurrence(rec);
            let x = Tensor::new(vec![0.1; t * n * 64], &[t, n, 64]).unwrap();
            let ones = Tensor::new(vec![1.0; t * n * h], &[t, n, h]).unwrap();
            let mut times = vec![];
            let mut ftimes = vec![];
            for _ in 0..4 {
                let a = Instant::now();
                let (_, tape) = m.forward_train(&x, None, None).unwrap();
                let f = a.elapsed();
                m.backward(tape, OutputGrads::output(&ones)).unwrap();
                times.push(a.elapsed().as_secs_f64() * 1e3);
                ftimes.push(f.as_secs_f64() * 1e3);
            }
            times.sort_by(|a, b| a.partial_cmp(b).unwrap());
            ftimes.sort_by(|a, b| a.partial_cmp(b).unwrap());
            println!("{:?} H={h} N={n} {rec:?}: fwd+bwd median {:.1} ms (fwd {:.1}) {:?}", mode, times[2], ftimes[2], times);
        }
    }
}
