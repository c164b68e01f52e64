//! Parameters and their gradients as views of one flat buffer each, so
//! that an optimiser step is a handful of whole-buffer ops instead of a few
//! ops per parameter tensor (a ResNet-18 has 62 of them; on a GPU each op
//! is a kernel launch).
//!
//! Attaching a parameter copies its value into its slice of the flat
//! buffer and points the parameter at that slice (`set_data`, PyTorch's
//! `p.data = view`), keeping its strides (channels-last weights stay
//! channels-last). Its gradient is attached the same way once autograd has
//! made one: later backward passes accumulate into it in place (autograd's
//! rule outside `create_graph`), and zeroing it keeps it attached. Whether
//! each parameter and gradient still lies in its slice is checked before
//! every use by comparing data pointers (host metadata, no device read); a
//! parameter something re-pointed (another optimiser over the same model)
//! is attached again, its current value copied first.
use tch::{Device, Kind, Tensor};

/// One parameter's place in the flat buffers.
#[derive(Debug)]
struct Slot {
    offset: i64,
    size: Vec<i64>,
    stride: Vec<i64>,
}

/// Slices start at multiples of this many elements (256 bytes in f32), so
/// each parameter is as aligned as its own allocation would be: convolution
/// kernels (oneDNN, cuDNN) take slower paths, or copy, on weights that are
/// not.
const ALIGN: i64 = 64;

impl Slot {
    /// The next aligned offset after this slot.
    fn end(&self) -> i64 {
        let end = self.offset + self.size.iter().product::<i64>();
        (end + ALIGN - 1) / ALIGN * ALIGN
    }
}

/// Parameters of one device and dtype as views of flat buffers `[n]` (with
/// zeros between the aligned slices, which the updates leave at zero).
#[derive(Debug)]
pub struct FlatGroup {
    /// Indices of the group's parameters in the optimiser's list.
    pub members: Vec<usize>,
    slots: Vec<Slot>,
    /// The parameters' values.
    pub values: Tensor,
    /// Their gradients.
    pub grads: Tensor,
}

/// The strides of a dense tensor of `size` with the dimension order of
/// `stride` (contiguous strides when `stride` is not dense).
fn dense_strides(size: &[i64], stride: &[i64]) -> Vec<i64> {
    let numel: i64 = size.iter().product();
    let span: i64 = size
        .iter()
        .zip(stride)
        .map(|(n, s)| (n - 1) * s)
        .sum::<i64>()
        + 1;
    if numel == 0 || stride.iter().all(|&s| s >= 0) && span == numel {
        return stride.to_vec();
    }
    let mut out = vec![1; size.len()];
    for d in (0..size.len().saturating_sub(1)).rev() {
        out[d] = out[d + 1] * size[d + 1].max(1);
    }
    out
}

impl FlatGroup {
    /// Groups `params` by device and dtype and attaches each parameter to
    /// its group's flat buffer.
    pub fn attach_all(params: &[Tensor]) -> Vec<FlatGroup> {
        let mut keys: Vec<(Device, Kind)> = Vec::new();
        let mut groups: Vec<FlatGroup> = Vec::new();
        for (i, p) in params.iter().enumerate() {
            let key = (p.device(), p.kind());
            let g = match keys.iter().position(|k| *k == key) {
                Some(g) => g,
                None => {
                    keys.push(key);
                    groups.push(FlatGroup {
                        members: Vec::new(),
                        slots: Vec::new(),
                        values: Tensor::new(),
                        grads: Tensor::new(),
                    });
                    groups.len() - 1
                }
            };
            let group = &mut groups[g];
            let offset = group.slots.last().map_or(0, Slot::end);
            group.members.push(i);
            group.slots.push(Slot {
                offset,
                size: p.size(),
                stride: dense_strides(&p.size(), &p.stride()),
            });
        }
        for (group, (device, kind)) in groups.iter_mut().zip(keys) {
            let n = group.slots.last().map_or(0, Slot::end);
            group.values = Tensor::zeros([n], (kind, device));
            group.grads = Tensor::zeros([n], (kind, device));
            group.attach(params);
        }
        groups
    }

    /// The view of `buffer` that holds member `k`.
    pub fn view(&self, buffer: &Tensor, k: usize) -> Tensor {
        let s = &self.slots[k];
        buffer.as_strided(s.size.as_slice(), s.stride.as_slice(), Some(s.offset))
    }

    /// Whether `t` is member `k`'s view of `buffer`.
    fn lies_in(&self, t: &Tensor, buffer: &Tensor, k: usize) -> bool {
        let elem = buffer.kind().elt_size_in_bytes() as i64;
        let at = buffer.data_ptr() as i64 + self.slots[k].offset * elem;
        t.data_ptr() as i64 == at && t.stride() == self.slots[k].stride
    }

    /// Points every member (and every gradient autograd has made) that
    /// does not lie in its slice back into it, copying its current value;
    /// returns whether every member has an attached gradient.
    pub fn attach(&self, params: &[Tensor]) -> bool {
        let _guard = tch::no_grad_guard();
        let mut all_grads = true;
        for (k, &i) in self.members.iter().enumerate() {
            let mut p = params[i].shallow_clone();
            if !self.lies_in(&p, &self.values, k) {
                let v = self.view(&self.values, k);
                v.detach().copy_(&p);
                p.set_data(&v);
            }
            let mut g = p.grad();
            if !g.defined() {
                all_grads = false;
            } else if !self.lies_in(&g, &self.grads, k) {
                let v = self.view(&self.grads, k);
                v.detach().copy_(&g);
                g.set_data(&v);
            }
        }
        all_grads
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_last_strides_are_kept_and_others_made_contiguous() {
        assert_eq!(
            dense_strides(&[2, 3, 4, 5], &[60, 1, 15, 3]),
            [60, 1, 15, 3]
        );
        assert_eq!(dense_strides(&[2, 3], &[3, 1]), [3, 1]);
        // A broadcast (stride 0) is not dense.
        assert_eq!(dense_strides(&[2, 3], &[0, 1]), [3, 1]);
    }

    #[test]
    fn parameters_and_gradients_become_views_and_stay_so() {
        let a = Tensor::from_slice(&[1.0f32, 2.0]).set_requires_grad(true);
        let b = Tensor::from_slice(&[3.0f32, 4.0, 5.0, 6.0])
            .view([2, 2])
            .set_requires_grad(true);
        let params = [a.shallow_clone(), b.shallow_clone()];
        let groups = FlatGroup::attach_all(&params);
        assert_eq!(groups.len(), 1);
        let g = &groups[0];
        let flat = |t: &Tensor| {
            let v = Vec::<f32>::try_from(t).unwrap();
            let a = ALIGN as usize;
            assert_eq!(v.len(), 2 * a, "two aligned slices");
            assert!(v[2..a].iter().chain(&v[a + 4..]).all(|&z| z == 0.0));
            [&v[..2], &v[a..a + 4]].concat()
        };
        assert_eq!(flat(&g.values), [1., 2., 3., 4., 5., 6.]);
        assert!(!g.attach(&params), "no gradient yet");
        ((&a * 2.0).sum(Kind::Float) + (&b * &b).sum(Kind::Float)).backward();
        assert!(g.attach(&params));
        assert_eq!(flat(&g.grads), [2., 2., 6., 8., 10., 12.]);
        // A second backward accumulates into the same buffer in place.
        (&a * 1.0).sum(Kind::Float).backward();
        assert_eq!(flat(&g.grads), [3., 3., 6., 8., 10., 12.]);
        // A step on the flat buffer moves the parameters themselves.
        let _ = g.values.shallow_clone().g_sub_(&g.grads);
        assert_eq!(Vec::<f32>::try_from(&a.detach()).unwrap(), [-2., -1.]);
        // Another optimiser re-points them; the first one takes them back.
        let other = FlatGroup::attach_all(&params);
        let _ = other[0].values.shallow_clone().g_add_scalar_(1.0);
        assert!(g.attach(&params));
        assert_eq!(Vec::<f32>::try_from(&a.detach()).unwrap(), [-1., 0.]);
        assert_eq!(flat(&g.values)[..2], [-1., 0.]);
        // Each slice starts a multiple of 256 bytes after the previous one.
        assert_eq!(
            b.data_ptr() as usize - a.data_ptr() as usize,
            4 * ALIGN as usize
        );
    }
}
