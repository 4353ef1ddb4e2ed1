//! The finite-difference check of the CPU backward: a scalar loss
//! `L = Σ w·output + Σ v·h_n (+ Σ u·c_n)` with random w, v, u, its analytic gradient from
//! `CpuRnn::backward_reference`, and central differences of the f32 CPU forward in f64.

use crate::support::{Problem, Rng, State};
use wgpu_rnn::{CpuRnn, DirectionWeights, Gradients, Rnn, RnnWeights, Tensor};

/// A point at which the loss is evaluated: the weights, the input and the initial state, each
/// a flat f32 vector that a finite difference perturbs one element at a time.
#[derive(Clone)]
pub struct Point {
    units: Vec<DirectionWeights>,
    input: Vec<f32>,
    h0: Vec<f32>,
    c0: Vec<f32>,
}

/// One variable of the loss: the input, h0, c0 or one parameter (unit, PyTorch's part name).
#[derive(Clone, Debug)]
pub enum Var {
    Input,
    H0,
    C0,
    Param(usize, &'static str),
}

impl Point {
    fn values(&mut self, var: &Var) -> &mut Vec<f32> {
        match *var {
            Var::Input => &mut self.input,
            Var::H0 => &mut self.h0,
            Var::C0 => &mut self.c0,
            Var::Param(unit, part) => {
                let w = &mut self.units[unit];
                match part {
                    "weight_ih" => &mut w.weight_ih,
                    "weight_hh" => &mut w.weight_hh,
                    "bias_ih" => w.bias_ih.as_mut().unwrap(),
                    "bias_hh" => w.bias_hh.as_mut().unwrap(),
                    _ => w.weight_hr.as_mut().unwrap(),
                }
            }
        }
    }
}

/// `L = Σ w·output + Σ v·h_n (+ Σ u·c_n)`, the loss whose upstream gradients are w, v, u.
pub struct Loss {
    pub problem: Problem,
    w: Tensor,
    v: Tensor,
    u: Option<Tensor>,
}

impl Loss {
    pub fn new(problem: Problem) -> Self {
        let point = Self::start(&problem);
        let out = Self::forward(&problem, &point);
        let mut rng = Rng(problem.seed ^ 0x1055);
        let w = rng.tensor(out.output.shape());
        let v = rng.tensor(out.h_n.shape());
        let u = out.c_n.map(|c_n| rng.tensor(c_n.shape()));
        Loss { problem, w, v, u }
    }

    fn start(problem: &Problem) -> Point {
        let state = problem.state();
        Point {
            units: problem.weights().units().to_vec(),
            input: problem.input().into_data(),
            h0: state.as_ref().map_or(vec![], |s| s.h0.data().to_vec()),
            c0: state.and_then(|s| s.c0).map_or(vec![], |c0| c0.into_data()),
        }
    }

    /// The problem's forward at `point`, through the CPU reference.
    fn forward(problem: &Problem, point: &Point) -> wgpu_rnn::RnnOutput {
        let config = problem.config.clone();
        let weights = RnnWeights::new(&config, point.units.clone()).unwrap();
        let model = CpuRnn::new(config, &weights).unwrap();
        let shape = problem.input().shape().to_vec();
        let input = Tensor::new(point.input.clone(), &shape).unwrap();
        let state = problem.state().map(|s| State {
            h0: Tensor::new(point.h0.clone(), s.h0.shape()).unwrap(),
            c0: s
                .c0
                .map(|c0| Tensor::new(point.c0.clone(), c0.shape()).unwrap()),
        });
        let hx = state.as_ref().map(State::hx);
        match &problem.lengths {
            Some(lengths) => model.forward_with_lengths(&input, lengths, hx),
            None => model.forward(&input, hx),
        }
        .unwrap()
    }

    fn at(&self, point: &Point) -> f64 {
        let out = Self::forward(&self.problem, point);
        let dot = |a: &Tensor, b: &Tensor| -> f64 {
            a.data()
                .iter()
                .zip(b.data())
                .map(|(&x, &y)| f64::from(x) * f64::from(y))
                .sum()
        };
        dot(&out.output, &self.w)
            + dot(&out.h_n, &self.v)
            + match (&out.c_n, &self.u) {
                (Some(c_n), Some(u)) => dot(c_n, u),
                _ => 0.0,
            }
    }

    pub fn backward(&self) -> Gradients {
        let p = &self.problem;
        let weights = p.weights();
        let model = CpuRnn::new(p.config.clone(), &weights).unwrap();
        let state = p.state();
        model
            .backward_reference(
                &p.input(),
                p.lengths.as_deref(),
                state.as_ref().map(State::hx),
                &self.w,
                &self.v,
                self.u.as_ref(),
            )
            .unwrap()
    }
}

/// Every variable of `problem` with its analytic gradient.
fn variables(problem: &Problem, grads: &Gradients) -> Vec<(Var, String, Vec<f32>)> {
    let mut vars = vec![(
        Var::Input,
        "input".to_string(),
        grads.d_input.data().to_vec(),
    )];
    if problem.with_state {
        vars.push((Var::H0, "h0".into(), grads.d_h0.data().to_vec()));
        if let Some(d_c0) = &grads.d_c0 {
            vars.push((Var::C0, "c0".into(), d_c0.data().to_vec()));
        }
    }
    let directions = problem.config.num_directions();
    for (name, tensor) in &grads.params {
        let part = ["weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr"]
            .into_iter()
            .find(|p| name.starts_with(p))
            .unwrap();
        let rest = name[part.len() + 2..].to_string(); // past "_l"
        let layer: usize = rest.split('_').next().unwrap().parse().unwrap();
        let unit = layer * directions + usize::from(rest.ends_with("_reverse"));
        vars.push((Var::Param(unit, part), name.clone(), tensor.data().to_vec()));
    }
    vars
}

/// Central differences of the loss against the analytic gradient, every element of every
/// variable; returns the failures and the worst |fd − analytic| seen.
pub fn finite_difference_check(problem: Problem) -> (Vec<String>, f64) {
    const STEP: f32 = 1e-3;
    let loss = Loss::new(problem);
    let grads = loss.backward();
    let start = Loss::start(&loss.problem);
    let (mut failures, mut worst) = (Vec::new(), 0.0f64);
    for (var, name, analytic) in variables(&loss.problem, &grads) {
        for (i, &want) in analytic.iter().enumerate() {
            let (mut plus, mut minus) = (start.clone(), start.clone());
            let x = plus.values(&var)[i];
            let (hi, lo) = (x + STEP, x - STEP);
            plus.values(&var)[i] = hi;
            minus.values(&var)[i] = lo;
            let fd = (loss.at(&plus) - loss.at(&minus)) / (f64::from(hi) - f64::from(lo));
            let err = (fd - f64::from(want)).abs();
            worst = worst.max(err);
            if err > FD_ABS + FD_REL * f64::from(want).abs() {
                failures.push(format!("{name}[{i}]: analytic {want:.6}, fd {fd:.6}"));
            }
        }
    }
    (failures, worst)
}

/// The finite-difference bound: the f32 forward rounds each output to about 6e-8, which a
/// step of 1e-3 turns into an error of about 1e-4 in the difference quotient; the truncation
/// error of a central difference is O(step²). A wrong term of a gradient is far larger.
const FD_ABS: f64 = 2e-3;
const FD_REL: f64 = 1e-2;
