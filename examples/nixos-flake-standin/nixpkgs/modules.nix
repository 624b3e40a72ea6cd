# The stand-in module evaluator behind `lib.nixosSystem`.
#
# It is a deliberately small version of nixpkgs' lib/modules.nix:
#  * a module is a path (imported), a function of the module arguments
#    ({ config, options, lib, pkgs, modulesPath } // specialArgs) or an attrset;
#  * `imports` are followed recursively and deduplicated by key (the file
#    path for files, the module's own `key` attribute, else "<parent>:anon-N"),
#    exactly like builtins.genericClosure-based collection in nixpkgs;
#  * a module with `options` or `config` is in the full form, otherwise the
#    whole set (minus imports/key/_file/meta/disabledModules) is its config;
#  * option declarations (lib.mkOption) only contribute their `default`
#    (at mkOptionDefault priority); there is NO type checking and undeclared
#    options are accepted (real NixOS would reject them);
#  * definitions merge recursively: attrsets merge by name, mkIf/mkOverride/
#    mkMerge/mkOrder are pushed down to the leaves; at a leaf the definitions
#    with the best (lowest) priority win, then lists concatenate (ordered by
#    mkBefore/mkAfter), equal values collapse, anything else is a conflict.
#    Derivations, flake inputs (anything with outPath) and functions are leaves.
{ lib }:
let
  inherit (builtins)
    all attrNames concatMap elemAt filter foldl' genericClosure genList head
    isAttrs isBool isFunction isList isPath isString length map sort tail
    toJSON zipAttrsWith;

  imap0 = f: list: genList (n: f n (elemAt list n)) (length list);
  showPath = path: builtins.concatStringsSep "." path;

  # Load one entry of a module list: returns { key; file; module; imports; }.
  load = args: fallbackKey: m:
    let
      isFile = isPath m || isString m;
      fn = if isFile then import m else m;
      value = if isFunction fn then fn args else fn;
      file = if isFile then toString m else value._file or fallbackKey;
      key = if isFile then toString m else value.key or fallbackKey;
    in
    if !(isAttrs value) then
      throw "stand-in module evaluator: module ${file} is not an attribute set"
    else {
      inherit key file;
      module = value;
      imports = value.imports or [ ];
    };

  collect = args: modules: genericClosure {
    startSet = imap0 (i: load args "<nixosSystem>:anon-${toString i}") modules;
    operator = item: imap0 (i: load args "${item.key}:anon-${toString i}") item.imports;
  };

  isFullForm = v: v ? config || v ? options;
  configOf = v:
    if isFullForm v then v.config or { }
    else removeAttrs v [ "imports" "key" "_file" "meta" "disabledModules" "_class" ];

  # Option declarations -> a definition tree holding only the defaults.
  optionDefaults = opts:
    lib.filterAttrs (_: v: v != null) (lib.mapAttrs
      (_: v:
        if lib.isOption v then (if v ? default then lib.mkOptionDefault v.default else null)
        else if isAttrs v then optionDefaults v
        else null)
      opts);

  # Merge declarations for the `options` module argument (declarations only).
  mergeOptions = foldl' (lib.recursiveUpdateUntil (_: l: r: lib.isOption l || lib.isOption r)) { };

  # A definition being merged: its value plus the properties pushed onto it.
  defItem = file: value: { inherit file value; conds = [ ]; prio = null; order = 1000; };

  # Expand mkMerge/mkIf/mkOverride/mkOrder without forcing any condition.
  expand = it:
    let v = it.value; t = if isAttrs v then v._type or null else null; in
    if t == "merge" then concatMap (c: expand (it // { value = c; })) v.contents
    else if t == "if" then expand (it // { conds = it.conds ++ [ v.condition ]; value = v.content; })
    else if t == "override" then
      expand (it // { prio = if it.prio == null then v.priority else it.prio; value = v.content; })
    else if t == "order" then expand (it // { order = v.priority; value = v.content; })
    else [ it ];

  isLeafValue = v:
    !(isAttrs v) || v ? _type || v ? outPath || v ? __functor || v.type or null == "derivation";

  files = items: builtins.concatStringsSep ", " (lib.unique (map (it: it.file) items));

  mergeNode = path: items:
    let
      exp = concatMap expand items;
      nodes = filter (it: !(isLeafValue it.value)) exp;
    in
    if nodes == [ ] then mergeLeaf path exp
    else if length nodes != length exp then
      throw "The option `${showPath path}' has conflicting definitions: attribute sets in some modules, other values in others (${files exp})."
    else
      zipAttrsWith (name: children: mergeNode (path ++ [ name ]) children)
        (map (it: lib.mapAttrs (_: v: it // { value = v; }) it.value) nodes);

  checkCond = path: c:
    if isBool c then c
    else throw "mkIf called with a non-Boolean condition (option `${showPath path}')";

  prioOf = it: if it.prio == null then 100 else it.prio;

  mergeLeaf = path: exp:
    let
      active = filter (it: all (checkCond path) it.conds) exp;
      best = foldl' (m: it: lib.min m (prioOf it)) 100000 active;
      winners = sort (x: y: x.order < y.order) (filter (it: prioOf it == best) active);
      values = map (it: it.value) winners;
      first = head values;
    in
    if active == [ ] then throw "The option `${showPath path}' is used but not defined."
    else if length values == 1 then first
    else if all isList values then builtins.concatLists values
    else if all (v: v == first) (tail values) then first
    else throw "The option `${showPath path}' has conflicting definition values in ${files winners}: ${
      builtins.concatStringsSep " vs " (map (v:
        if isFunction v then "<function>" else if isAttrs v && v ? outPath then toString v.outPath
        else toJSON v) values)}.";

  # evalModules: returns { config; options; items; }.
  evalModules = { modules, specialArgs ? { }, extraArgs ? (_: { }) }:
    let
      args = { inherit lib config options; } // extraArgs config // specialArgs;
      items = collect args modules;
      defs = concatMap (it:
        [ (defItem it.file (configOf it.module)) ]
        ++ lib.optional (it.module ? options) (defItem it.file (optionDefaults it.module.options)))
        items;
      config = mergeNode [ ] defs;
      options = mergeOptions (map (it: it.module.options or { }) items);
    in
    { inherit config options; modules = map (it: it.key) items; };
in
{
  inherit evalModules;
}
