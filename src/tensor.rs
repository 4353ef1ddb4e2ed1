//! A minimal dense f32 tensor: a shape and row-major data, as PyTorch would hand them over.

use crate::error::{Result, RnnError};

/// A dense, row-major (C-contiguous) f32 tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: Vec<f32>,
}

impl Tensor {
    /// Wraps `data` with `shape`; fails if the element counts differ.
    pub fn new(data: Vec<f32>, shape: &[usize]) -> Result<Self> {
        let expected = element_count(shape)?;
        if expected != data.len() {
            return Err(RnnError::ShapeMismatch {
                what: "tensor",
                expected: format!("{expected} elements for shape {shape:?}"),
                got: format!("{} elements", data.len()),
            });
        }
        Ok(Tensor {
            shape: shape.to_vec(),
            data,
        })
    }

    /// A tensor of zeros. Fails, rather than panicking or aborting, when the shape's size
    /// overflows or its memory cannot be had.
    pub fn zeros(shape: &[usize]) -> Result<Self> {
        let len = element_count(shape)?;
        let mut data = Vec::new();
        // `vec![0.0; len]` would panic on a capacity overflow and abort on a failed
        // allocation: reserving first turns both into an error.
        data.try_reserve_exact(len)
            .map_err(|_| RnnError::shape("tensor", "a shape whose size fits in memory", shape))?;
        data.resize(len, 0.0);
        Ok(Tensor {
            shape: shape.to_vec(),
            data,
        })
    }

    /// The shape, outermost dimension first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The elements in row-major order.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// Takes the elements out.
    pub fn into_data(self) -> Vec<f32> {
        self.data
    }
}

/// The elements of a tensor of `shape`, or an error when that overflows.
fn element_count(shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| RnnError::shape("tensor", "a shape whose size fits in memory", shape))
}
