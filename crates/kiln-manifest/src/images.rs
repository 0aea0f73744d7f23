//! The image references a manifest names, in one walk shared by pulling, package builds and
//! assembly.

use crate::{CONTAINER_SECTIONS, Manifest};

impl Manifest {
    /// Every image reference the manifest names, with the key it stands at (`kernel.image`,
    /// `init[0]`, `volumes[1].image`, `onboot[2].image`, ...), in manifest order. Empty
    /// references (a manifest without a kernel, a volume without an image) are left out.
    pub fn image_references(&self) -> Vec<(&str, String)> {
        let mut out = Vec::new();
        if !self.kernel.image.is_empty() {
            out.push((self.kernel.image.as_str(), "kernel.image".to_string()));
        }
        for (i, r) in self.init.iter().enumerate() {
            out.push((r.as_str(), format!("init[{i}]")));
        }
        for (i, v) in self.volumes.iter().enumerate() {
            if !v.image.is_empty() {
                out.push((v.image.as_str(), format!("volumes[{i}].image")));
            }
        }
        for section in CONTAINER_SECTIONS {
            for (i, img) in self.containers(section).iter().enumerate() {
                out.push((img.image.as_str(), format!("{section}[{i}].image")));
            }
        }
        out
    }

    /// Every image reference of the manifest, mutably, in the order of
    /// [`Manifest::image_references`] (to replace references, such as `@pkg:` ones, by names).
    pub fn image_references_mut(&mut self) -> Vec<&mut String> {
        let mut out = Vec::new();
        if !self.kernel.image.is_empty() {
            out.push(&mut self.kernel.image);
        }
        out.extend(self.init.iter_mut());
        out.extend(
            self.volumes
                .iter_mut()
                .filter(|v| !v.image.is_empty())
                .map(|v| &mut v.image),
        );
        out.extend(self.onboot.iter_mut().map(|i| &mut i.image));
        out.extend(self.onshutdown.iter_mut().map(|i| &mut i.image));
        out.extend(self.services.iter_mut().map(|i| &mut i.image));
        out
    }
}

#[cfg(test)]
mod tests {
    use crate::ManifestSet;

    #[test]
    fn references_come_with_their_keys_in_order() {
        let yaml = "kernel:\n  image: k:1\ninit:\n  - i:1\nonboot:\n  - name: a\n    image: a:1\nservices:\n  - name: b\n    image: b:1\n";
        let mut set = ManifestSet::default();
        set.add("m.yml", yaml).expect("parse");
        let refs: Vec<_> = set
            .manifest
            .image_references()
            .into_iter()
            .map(|(r, k)| format!("{k}={r}"))
            .collect();
        assert_eq!(
            refs,
            [
                "kernel.image=k:1",
                "init[0]=i:1",
                "onboot[0].image=a:1",
                "services[0].image=b:1"
            ]
        );
        for r in set.manifest.image_references_mut() {
            r.push('x');
        }
        assert_eq!(set.manifest.services[0].image, "b:1x");
    }
}
